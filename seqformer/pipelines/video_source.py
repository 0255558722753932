"""Finding videos in a folder tree and decoding their frames one at a time (PIL for images, PyAV for video files).

A *video* is either a folder that directly holds image frames (``.jpg``, ``.jpeg``, ``.png``; frames in name order,
the YouTube-VIS layout) or a video file (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``). :func:`list_videos` walks
an input folder recursively and also reports what it cannot use (an empty folder, a file that is neither a frame nor
a video) so the caller can list them as skipped; nothing here raises on bad content. Decoding is streamed
(:func:`iter_frames`), so a long video never has to sit in memory; a frame that cannot be decoded raises
:class:`~seqformer.pipelines.video_io.CorruptFrameError` at the point it is reached.

Every video gets a *safe name* (:func:`safe_name`) derived from its path relative to the input folder: usable as one
folder name on any file system, free of ``..`` and path separators, and distinct for distinct paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from seqformer.pipelines.video_io import CorruptFrameError

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_MAX_NAME = 180


@dataclass(frozen=True)
class VideoEntry:
    """One video found under an input folder.

    Attributes:
        path: absolute path of the frame folder or the video file.
        video: path relative to the input folder, with ``/`` separators (how reports name the video).
        kind: ``"frames"`` for a folder of image frames, ``"file"`` for a video file.
        name: :func:`safe_name` of ``video``, the name of its output folder.
    """

    path: str
    video: str
    kind: Literal["frames", "file"]
    name: str


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns without decoding the whole video.

    Attributes:
        height: frame height in pixels.
        width: frame width in pixels.
        num_frames: frame count for frame folders; the container's count for files (may be ``None`` when unknown).
        fps: frames per second of a video file (``None`` for frame folders).
    """

    height: int
    width: int
    num_frames: int | None
    fps: float | None


def safe_name(relative_path: str) -> str:
    """A single, file-system-safe folder name for a video's relative path.

    Path components are joined with ``+``; letters, digits, ``-``, ``_`` and ``.`` are kept; every other byte
    (including ``+`` and ``%``) becomes ``%XX``, and a leading ``.`` of a component becomes ``%2E``, so the result never
    contains a separator, ``..`` as a component or a hidden name, and distinct paths give distinct names. Names
    longer than 180 characters are cut and suffixed with a hash of the full path.

    Args:
        relative_path: ``/``-separated path relative to the input folder, e.g. ``"cats/clip 1.mp4"``.

    Raises:
        ValueError: the path is empty, absolute or contains ``..``.
    """
    parts = relative_path.replace(os.sep, "/").split("/")
    if not relative_path or relative_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"safe_name needs a relative path without empty, '.' or '..' components, got {relative_path!r}"
        )
    encoded = []
    for part in parts:
        chars = []
        for i, char in enumerate(part):
            if char in _SAFE_CHARS and not (i == 0 and char == "."):
                chars.append(char)
            else:
                chars.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        encoded.append("".join(chars))
    name = "+".join(encoded)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:12]
        name = f"{name[: _MAX_NAME - 13]}-{digest}"
    return name


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def list_videos(root: str | Path) -> tuple[list[VideoEntry], list[dict[str, str]]]:
    """Walk ``root`` recursively and split what it holds into videos and skipped items.

    A folder with image frames directly inside is one video (its sub-folders are walked on their own). A file with a
    video suffix is one video. Hidden files and folders (``.name``) are ignored.

    Args:
        root: the input folder.

    Returns:
        ``(videos, skipped)``: videos sorted by relative path, and ``[{video, reason}]`` for empty folders and
        files that are neither frames nor videos (relative paths, sorted).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"input folder not found or not a folder: {root}; pass --input DIR with videos")
    videos: list[VideoEntry] = []
    skipped: list[dict[str, str]] = []
    for folder, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        files = sorted(f for f in filenames if not _is_hidden(f))
        here = Path(folder)
        rel_folder = here.relative_to(root).as_posix()
        frames = [f for f in files if Path(f).suffix.lower() in FRAME_SUFFIXES]
        if frames and rel_folder != ".":
            videos.append(VideoEntry(str(here), rel_folder, "frames", safe_name(rel_folder)))
        for file in files:
            rel = (here / file).relative_to(root).as_posix()
            suffix = Path(file).suffix.lower()
            if suffix in VIDEO_SUFFIXES:
                videos.append(VideoEntry(str(here / file), rel, "file", safe_name(rel)))
            elif suffix in FRAME_SUFFIXES and rel_folder == ".":
                skipped.append(
                    {
                        "video": rel,
                        "reason": "image file at the top of the input folder; put the frames "
                        "of each video in their own sub-folder",
                    }
                )
            elif suffix not in FRAME_SUFFIXES:
                skipped.append(
                    {
                        "video": rel,
                        "reason": f"not a video: {suffix or 'no'} suffix; expected a video "
                        f"file {VIDEO_SUFFIXES} or a folder of {FRAME_SUFFIXES} frames",
                    }
                )
        if not files and not dirnames and rel_folder != ".":
            skipped.append({"video": rel_folder, "reason": "empty folder: no frames and no video files"})
    videos.sort(key=lambda v: v.video)
    skipped.sort(key=lambda s: s["video"])
    return videos, skipped


def frame_files(entry: VideoEntry) -> list[Path]:
    """Frame files of a frame-folder video in name order."""
    folder = Path(entry.path)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES and not _is_hidden(p.name)
    )


def _open_image(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # a truncated file fails here rather than later
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise CorruptFrameError(f"{path}: cannot decode image ({err})") from None
    return image.convert("RGB") if image.mode != "RGB" else image


def probe_video(entry: VideoEntry) -> VideoInfo:
    """Size, frame count and rate of a video, decoding at most its first frame.

    Raises:
        CorruptFrameError: the first frame or the container cannot be read.
    """
    if entry.kind == "frames":
        files = frame_files(entry)
        if not files:
            raise CorruptFrameError(f"{entry.path}: the folder holds no frames")
        width, height = _open_image(files[0]).size
        return VideoInfo(height=height, width=width, num_frames=len(files), fps=None)
    import av

    try:
        with av.open(entry.path) as container:
            if not container.streams.video:
                raise CorruptFrameError(f"{entry.path}: the file has no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise CorruptFrameError(f"{entry.path}: the video holds no decodable frames")
            rate = float(stream.average_rate) if stream.average_rate else None
            return VideoInfo(height=first.height, width=first.width, num_frames=stream.frames or None, fps=rate)
    except CorruptFrameError:
        raise
    except (av.error.FFmpegError, ValueError) as err:  # type: ignore[attr-defined]
        raise CorruptFrameError(f"{entry.path}: cannot read video ({err})") from None


def iter_frames(entry: VideoEntry) -> Iterator[np.ndarray]:
    """Decode a video's frames one by one as uint8 RGB arrays ``[H, W, 3]``.

    Raises:
        CorruptFrameError: a frame cannot be decoded, the frame size changes within the video, or a video file
            holds no decodable frame. Raised when the bad frame is reached; earlier frames have been yielded.
    """
    size: tuple[int, int] | None = None
    count = 0
    for array in _iter_frames_raw(entry):
        if size is None:
            size = array.shape[:2]
        elif array.shape[:2] != size:
            raise CorruptFrameError(
                f"{entry.path}: frame {count} is {array.shape[1]}x{array.shape[0]} but the first frame is "
                f"{size[1]}x{size[0]}; all frames of a video must share one size"
            )
        count += 1
        yield array
    if count == 0:
        raise CorruptFrameError(f"{entry.path}: no decodable frames")


def _iter_frames_raw(entry: VideoEntry) -> Iterator[np.ndarray]:
    if entry.kind == "frames":
        for path in frame_files(entry):
            yield np.asarray(_open_image(path))
        return
    import av

    try:
        with av.open(entry.path) as container:
            if not container.streams.video:
                raise CorruptFrameError(f"{entry.path}: the file has no video stream")
            for frame in container.decode(container.streams.video[0]):
                yield frame.to_ndarray(format="rgb24")
    except CorruptFrameError:
        raise
    except (av.error.FFmpegError, ValueError) as err:  # type: ignore[attr-defined]
        raise CorruptFrameError(f"{entry.path}: cannot decode video ({err})") from None
