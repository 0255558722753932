"""Mask encodings: COCO RLE (compressed / uncompressed) and polygons ↔ boolean arrays, via pycocotools."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one YouTube-VIS / COCO segmentation into a bool mask ``[height, width]``.

    Args:
        segmentation: compressed RLE (``{"size", "counts": str}``), uncompressed RLE (``counts`` a list of ints) or
            a polygon list (``[[x0, y0, x1, y1, ...], ...]``).
        height: image height the segmentation refers to.
        width: image width.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in segmentation if len(p) >= 6], height, width)
        if not rles:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    else:
        counts = segmentation["counts"]
        rle = {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def encode_rle(mask: np.ndarray) -> str:
    """Compressed COCO RLE counts string of a bool mask ``[H, W]`` (the size is stored next to it)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def decode_rle(counts: str, height: int, width: int) -> np.ndarray:
    """Bool mask ``[height, width]`` from a compressed RLE counts string."""
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)


def rle_dict(mask: np.ndarray) -> dict[str, Any]:
    """YouTube-VIS result-style RLE ``{"size": [h, w], "counts": str}`` of a bool mask."""
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encode_rle(mask)}


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` box (pixel edges, float32 ``[4]``) of a bool mask; zeros when the mask is empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32)


def resize_mask_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of bool masks ``[..., H, W]`` to ``[..., height, width]`` (pixel-centre sampling)."""
    src_h, src_w = mask.shape[-2:]
    if (src_h, src_w) == (height, width):
        return mask
    rows = np.minimum(((np.arange(height) + 0.5) * src_h / height).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * src_w / width).astype(np.int64), src_w - 1)
    return mask[..., rows[:, None], cols[None, :]]
