"""Frame and video decoding/encoding: JPEG frames with PIL, video files (mp4, avi, ...) with PyAV.

Everything here is deterministic; nothing random. Corrupt or truncated images raise :class:`CorruptFrameError`, which
the record builder turns into a skipped video.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class CorruptFrameError(ValueError):
    """An image file that cannot be decoded completely (truncated, not an image, unreadable)."""


def decode_image(data: bytes, name: str = "<bytes>") -> Image.Image:
    """Decode encoded image bytes completely into an RGB PIL image.

    Args:
        data: encoded image (JPEG, PNG, ...).
        name: shown in the error message.

    Raises:
        CorruptFrameError: the bytes are not a complete, decodable image.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # forces a full decode: truncated JPEGs fail here, not on open
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptFrameError(f"{name}: cannot decode image ({err})") from None
    return image.convert("RGB") if image.mode != "RGB" else image


def encode_jpeg(image: Image.Image, quality: int = 95) -> bytes:
    """Encode an RGB PIL image as JPEG bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def storage_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """``(h, w)`` a frame is stored at: unchanged when the longer side is ``<= max_size``, else scaled down to it."""
    longer = max(height, width)
    if longer <= max_size:
        return height, width
    scale = max_size / longer
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def prepare_frame(data: bytes, max_size: int, quality: int, name: str = "<bytes>") -> tuple[bytes, int, int, int, int]:
    """Decode a frame (validating it) and return the bytes to store, decoding it once and no more than needed.

    A frame that already fits in ``max_size`` is decoded only to prove it is complete and its original bytes are
    kept (no mode conversion, no re-encode); for a JPEG that proof is a decode at 1/8 DCT scale (PIL draft mode):
    every entropy-coded byte is still read, so a truncated or unreadable file fails exactly as in a full decode,
    but the inverse transform and colour conversion run on 1/64 of the pixels. A larger frame is resized (PIL
    bilinear, antialiased) so its longer side is ``max_size`` and re-encoded as JPEG; a JPEG is first decoded at a
    reduced DCT scale (PIL draft mode: 1/2, 1/4, 1/8 of the size, never below the target), which cuts the decode
    and resize work for large downscales.

    Returns:
        ``(stored_bytes, height, width, stored_height, stored_width)``; height/width are the original size.

    Raises:
        CorruptFrameError: the frame cannot be decoded.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        stored_h, stored_w = storage_size(height, width, max_size)
        if (stored_h, stored_w) == (height, width):
            if image.format == "JPEG":
                image.draft(image.mode, ((width + 7) // 8, (height + 7) // 8))
            image.load()  # truncated JPEGs fail here, not on open
            return data, height, width, height, width
        if image.format == "JPEG":
            image.draft("RGB", (stored_w, stored_h))
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptFrameError(f"{name}: cannot decode image ({err})") from None
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = image.resize((stored_w, stored_h), Image.BILINEAR)
    return encode_jpeg(resized, quality), height, width, stored_h, stored_w


def decode_frames(frames: Sequence[bytes]) -> list[np.ndarray]:
    """Decode stored frames into uint8 RGB arrays ``[H, W, 3]``."""
    return [np.asarray(decode_image(bytes(f), f"frame {i}")) for i, f in enumerate(frames)]


def list_frame_files(folder: str | Path) -> list[Path]:
    """Image files of a frame folder in name order (the YouTube-VIS layout names frames ``00000.jpg``...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_video(path: str | Path, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode a video file (mp4, avi, mov, mkv, webm) into uint8 RGB frames ``[H, W, 3]`` with PyAV.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFrameError: PyAV cannot decode it.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except (av.error.FFmpegError, ValueError) as err:  # type: ignore[attr-defined]
        raise CorruptFrameError(f"{path}: cannot decode video ({err})") from None
    if not frames:
        raise CorruptFrameError(f"{path}: the video holds no decodable frames")
    return frames


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    """Encode uint8 RGB frames ``[H, W, 3]`` (even sizes are safest for H.264) into a video file with PyAV."""
    import av

    if not frames:
        raise ValueError("write_video: got no frames; pass at least one [H, W, 3] uint8 array")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264" if path.suffix.lower() in (".mp4", ".mkv", ".mov") else "mpeg4", rate=fps
        )
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
