"""Run-length encoded (RLE) masks: validation, areas and conversions on top of pycocotools.

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

# pycocotools 2.0.11's ``area`` counts its input in a uint8 under NumPy 2, so it fails on more than 255 masks at once.
_AREA_CHUNK = 255
_FIRST_CHAR, _LAST_CHAR = 48, 111
_VALID_CHARS = bytes(range(_FIRST_CHAR, _LAST_CHAR + 1))


def areas(rles: Sequence[dict[str, Any]]) -> np.ndarray:
    """Pixel counts of compressed RLEs, computed in C.

    Args:
        rles: compressed RLE dicts (``counts`` a str or bytes).

    Returns:
        int64 ``[len(rles)]`` mask areas.
    """
    out = np.zeros(len(rles), dtype=np.int64)
    for start in range(0, len(rles), _AREA_CHUNK):
        out[start : start + _AREA_CHUNK] = coco_mask.area(list(rles[start : start + _AREA_CHUNK]))
    return out


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


def check_compressed_many(counts: Sequence[str], chunk_chars: int = 1 << 23) -> int | None:
    """Index of the first compressed string that cannot be decoded (bad characters, ends inside a run), or None.

    Vectorised over the concatenated strings, in chunks of about ``chunk_chars`` characters to bound memory. It does not
    check that the runs add up to the mask size (that needs a full decode, see :func:`decode_counts`).

    Raises:
        TypeError: an entry is not a str.
    """
    if not counts:
        return None
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=len(counts))
    bounds = np.searchsorted(np.cumsum(lengths), np.arange(chunk_chars, int(lengths.sum()), chunk_chars))
    edges = [0, *sorted(set(bounds.tolist()) - {0, len(counts)}), len(counts)]
    for start, stop in zip(edges[:-1], edges[1:]):
        bad = _check_chunk(counts[start:stop], lengths[start:stop])
        if bad is not None:
            return start + bad
    return None


def _check_chunk(counts: Sequence[str], lengths: np.ndarray) -> int | None:
    joined = "".join(counts)  # TypeError on a non-str entry
    if lengths.min() == 0:
        return int(np.argmin(lengths))
    try:
        raw = joined.encode("ascii")
    except UnicodeEncodeError:
        return next(i for i, text in enumerate(counts) if not text.isascii())
    ends = np.cumsum(lengths) - 1
    # The last character must not say "more groups follow"; only those characters are gathered.
    bad = ((np.frombuffer(raw, dtype=np.uint8)[ends] - np.uint8(_FIRST_CHAR)) & 0x20) != 0
    if raw.translate(None, _VALID_CHARS):  # one C pass: anything left is outside '0'..'o'
        data = np.frombuffer(raw, dtype=np.uint8)
        bad_char = np.flatnonzero((data < _FIRST_CHAR) | (data > _LAST_CHAR))
        bad[np.searchsorted(ends, bad_char)] = True
    return int(np.argmax(bad)) if bad.any() else None


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
