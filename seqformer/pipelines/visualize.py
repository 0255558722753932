"""Pictures of predictions: mask overlays on frames, an MP4 of them (PyAV) and a contact-sheet PNG.

Each result entry (one instance with one class) gets its own colour, drawn as a translucent mask with an outline
and a label ``"<class> <score>"`` at the top-left of its box. Everything streams frame by frame: the overlay video
of a long video never holds more than one frame.
"""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pycocotools import mask as mask_util

logger = logging.getLogger(__name__)


def instance_colours(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct, saturated RGB colours (hues spaced by the golden ratio, so neighbours differ)."""
    colours = []
    for i in range(count):
        hue = (0.13 + i * 0.618033988749895) % 1.0
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 1.0 if i % 2 == 0 else 0.8)
        colours.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colours


def segmentation_mask(segmentation: dict[str, Any] | None, height: int, width: int) -> np.ndarray:
    """Bool mask ``[height, width]`` of a compressed RLE result segmentation; all False for ``None``."""
    if segmentation is None:
        return np.zeros((height, width), dtype=bool)
    counts = segmentation["counts"]
    rle = {"size": list(segmentation["size"]), "counts": counts.encode("utf-8") if isinstance(counts, str) else counts}
    return mask_util.decode(rle).astype(bool)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (a one-pixel inner border)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_frame(
    frame: np.ndarray,
    masks: Sequence[np.ndarray],
    colours: Sequence[tuple[int, int, int]],
    labels: Sequence[str],
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw instance masks with outlines and labels on a frame.

    Args:
        frame: uint8 RGB ``[H, W, 3]``.
        masks: bool ``[H, W]`` per instance (empty masks draw nothing).
        colours: RGB per instance.
        labels: text per instance, drawn at the top-left of the mask's box.
        alpha: opacity of the mask fill.

    Returns:
        a new uint8 ``[H, W, 3]`` array.
    """
    canvas = frame.astype(np.float32)
    for mask, colour in zip(masks, colours):
        if mask.any():
            canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(colour, np.float32)
            canvas[_outline(mask)] = colour
    image = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for mask, colour, label in zip(masks, colours, labels):
        ys = np.flatnonzero(mask.any(axis=1))
        xs = np.flatnonzero(mask.any(axis=0))
        if ys.size == 0:
            continue
        left, top, right, bottom = draw.textbbox((int(xs[0]), int(ys[0])), label, font=font)
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
        draw.text((int(xs[0]), int(ys[0])), label, fill=(0, 0, 0), font=font)
    return np.asarray(image)


def entry_label(entry: dict[str, Any], class_names: dict[int, str] | None = None) -> str:
    """``"<class name or id> <score>"`` of a result entry."""
    category = int(entry["category_id"])
    name = class_names.get(category, f"class {category}") if class_names else f"class {category}"
    return f"{name} {float(entry['score']):.2f}"


def overlay_frames(
    frames: Iterable[np.ndarray],
    results: Sequence[dict[str, Any]],
    *,
    score_threshold: float = 0.0,
    class_names: dict[int, str] | None = None,
) -> Iterator[np.ndarray]:
    """Overlay the results on a video's frames, one frame at a time.

    Args:
        frames: the video's uint8 RGB frames in order.
        results: YouTube-VIS result entries (``score``, ``category_id``, ``segmentations``) of that video.
        score_threshold: entries below this score are not drawn.
        class_names: optional ``{category_id: name}`` for the labels.
    """
    shown = [r for r in results if float(r["score"]) >= score_threshold]
    colours = instance_colours(len(shown))
    labels = [entry_label(r, class_names) for r in shown]
    for index, frame in enumerate(frames):
        height, width = frame.shape[:2]
        masks = []
        for entry in shown:
            segs = entry["segmentations"]
            masks.append(segmentation_mask(segs[index] if index < len(segs) else None, height, width))
        yield overlay_frame(frame, masks, colours, labels)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0) -> int:
    """Encode uint8 RGB frames as H.264 (libx264, yuv420p) into an MP4 with PyAV, streaming.

    Odd frame sizes are padded by one replicated row/column (yuv420p needs even sizes).

    Returns:
        the number of frames written.

    Raises:
        ValueError: no frames.
    """
    import av

    count = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "veryfast", "crf": "23"}
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if stream is None:
            raise ValueError(f"write_mp4 {path}: got no frames")
        for packet in stream.encode():
            container.mux(packet)
    return count


def sample_indices(num_frames: int, count: int) -> list[int]:
    """Up to ``count`` frame indices spread evenly over a video, first and last included."""
    if num_frames <= 0:
        return []
    if num_frames <= count:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def contact_sheet(
    frames: Sequence[np.ndarray], captions: Sequence[str], columns: int = 4, thumb_width: int = 320
) -> Image.Image:
    """A grid of thumbnails with a caption under each.

    Args:
        frames: uint8 RGB ``[H, W, 3]`` frames (e.g. overlays), all one size.
        captions: one text per frame (e.g. ``"frame 12"``).
        columns: thumbnails per row.
        thumb_width: thumbnail width in pixels (height keeps the aspect ratio).
    """
    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    height, width = frames[0].shape[:2]
    thumb_w = min(thumb_width, width)
    thumb_h = max(1, round(height * thumb_w / width))
    caption_h = 14
    columns = min(columns, len(frames))
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * thumb_w, rows * (thumb_h + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, (frame, caption) in enumerate(zip(frames, captions)):
        x, y = (i % columns) * thumb_w, (i // columns) * (thumb_h + caption_h)
        sheet.paste(Image.fromarray(frame).resize((thumb_w, thumb_h), Image.BILINEAR), (x, y))
        draw.text((x + 2, y + thumb_h + 1), caption, fill=(235, 235, 235))
    return sheet


def render_video_outputs(
    folder: str | Path,
    frames: Iterable[np.ndarray],
    results: Sequence[dict[str, Any]],
    num_frames: int,
    *,
    fps: float = 10.0,
    score_threshold: float = 0.0,
    class_names: dict[int, str] | None = None,
    overlay_name: str = "overlay.mp4",
    sheet_name: str = "contact_sheet.png",
    sheet_frames: int = 8,
) -> None:
    """Write ``overlay.mp4`` and ``contact_sheet.png`` of one video into ``folder`` in a single pass over frames."""
    folder = Path(folder)
    wanted = set(sample_indices(num_frames, sheet_frames))
    picked: list[np.ndarray] = []
    captions: list[str] = []

    def tap() -> Iterator[np.ndarray]:
        for index, frame in enumerate(
            overlay_frames(frames, results, score_threshold=score_threshold, class_names=class_names)
        ):
            if index in wanted:
                thumb = Image.fromarray(frame)
                thumb.thumbnail((320, 320))
                picked.append(np.asarray(thumb))
                captions.append(f"frame {index}")
            yield frame

    written = write_mp4(folder / overlay_name, tap(), fps=fps)
    if written != num_frames:
        raise ValueError(f"{folder}: decoded {written} frames for the overlay but predicted {num_frames}")
    contact_sheet(picked, captions).save(folder / sheet_name, format="PNG")
