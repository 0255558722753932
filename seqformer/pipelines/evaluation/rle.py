"""Run-length encoded (RLE) masks: decoding for messages, and conversions on top of pycocotools.

YouTube-VIS stores one mask per frame as a COCO RLE: ``{"size": [h, w], "counts": ...}`` with the runs in column-major
order, starting with a run of zeros. ``counts`` is either a list of ints ("uncompressed", used by the ground truth) or
pycocotools' compact string ("compressed", used by results): each run is written as 5-bit groups in characters
``'0'`` (48) to ``'o'`` (111), bit 0x20 meaning "more groups follow", and runs from the fourth on are stored as the
difference to the run two places earlier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import _mask as coco_mask

logger = logging.getLogger(__name__)

_FIRST_CHAR, _LAST_CHAR = 48, 111


def decode_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths of one compressed RLE string, exactly as pycocotools' ``rleFrString`` reads them.

    Args:
        counts: the compressed string.

    Returns:
        int64 ``[num_runs]`` run lengths (negative values mean the string is corrupt).

    Raises:
        ValueError: a character outside ``'0'..'o'`` or a string that ends inside a run.
    """
    data = np.frombuffer(counts.encode("ascii", "replace") if isinstance(counts, str) else counts, dtype=np.uint8)
    if data.size and (data.min() < _FIRST_CHAR or data.max() > _LAST_CHAR):
        raise ValueError(f"characters outside '0'..'o' in compressed counts {_short(counts)!r}")
    if not data.size:
        return np.zeros(0, dtype=np.int64)
    groups = data.astype(np.int64) - _FIRST_CHAR
    last = (groups & 0x20) == 0
    if data.size and not last[-1]:
        raise ValueError(f"compressed counts {_short(counts)!r} end in the middle of a run")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    position = np.arange(data.size) - np.repeat(starts, ends - starts + 1)
    values = np.add.reduceat((groups & 0x1F) << (5 * position), starts) if data.size else np.zeros(0, np.int64)
    negative = (groups[ends] & 0x10) != 0
    values[negative] -= np.left_shift(np.int64(1), 5 * (ends[negative] - starts[negative] + 1))
    runs = values.copy()
    for parity in (1, 2):  # runs 3, 5, ... add run 1's chain; runs 4, 6, ... add run 2's chain
        runs[parity::2] = np.cumsum(values[parity::2])
    return runs


def check_runs(runs: Sequence[int] | np.ndarray, size: Sequence[int]) -> str | None:
    """Why a run-length list is not a valid mask of ``size``, or None if it is."""
    runs = np.asarray(runs, dtype=np.int64)
    height, width = int(size[0]), int(size[1])
    if runs.size and runs.min() < 0:
        return f"a negative run length ({int(runs.min())})"
    if int(runs.sum()) != height * width:
        return f"run lengths sum to {int(runs.sum())}, not height*width = {height * width}"
    return None


def compress(rle: dict[str, Any]) -> dict[str, Any]:
    """A compressed RLE (``counts`` as str) from an uncompressed one (``counts`` a list of ints)."""
    height, width = rle["size"]
    out = coco_mask.frUncompressedRLE([rle], height, width)[0]
    return {"size": [int(height), int(width)], "counts": out["counts"].decode("ascii")}


def from_polygons(polygons: list[list[float]], height: int, width: int) -> dict[str, Any]:
    """A compressed RLE of the union of COCO polygons on a ``height x width`` frame."""
    merged = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width), 0)
    return {"size": [int(height), int(width)], "counts": merged["counts"].decode("ascii")}


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed RLEs of a stack of binary masks.

    Args:
        masks: bool or uint8 ``[num_frames, height, width]``.

    Returns:
        one ``{"size": [h, w], "counts": str}`` per frame (an empty mask is an RLE of zeros, not None).
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [num_frames, height, width], got shape {tuple(masks.shape)}")
    fortran = np.asfortranarray(np.transpose(masks.astype(np.uint8), (1, 2, 0)))  # [h, w, num_frames]
    encoded = coco_mask.encode(fortran)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in encoded]


def _short(counts: str | bytes, limit: int = 40) -> str | bytes:
    return counts if len(counts) <= limit else counts[:limit] + ("..." if isinstance(counts, str) else b"...")
