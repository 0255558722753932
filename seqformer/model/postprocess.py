"""Post-processing to YouTube-VIS results, with the semantics of the official ``inference.py`` (reference §12)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _encode_rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_util  # imported lazily: only post-processing needs it

    rle = mask_util.encode(np.array(mask[:, :, np.newaxis], order="F"))[0]
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def output_mask_stride(outputs: dict[str, Any]) -> int:
    """Stride of ``outputs["pred_masks"]`` against the model input: what the model recorded in
    ``outputs["mask_inputs"]["out_stride"]`` (``model.mask_out_stride``), or 4 for official outputs without it."""
    recorded = outputs.get("mask_inputs", {}).get("out_stride")
    return 4 if recorded is None else int(recorded)


def input_region_masks(
    outputs: dict[str, Any], index: int, input_size: tuple[int, int], mask_stride: int | None = None
) -> torch.Tensor:
    """``outputs["pred_masks"][index]`` (``[Q, T, h, w]`` logits) cropped to the unpadded input region
    ``[:ceil(H/s), :ceil(W/s)]``; ``s`` is ``mask_stride``, or :func:`output_mask_stride` when None."""
    stride = output_mask_stride(outputs) if mask_stride is None else int(mask_stride)
    height, width = math.ceil(input_size[0] / stride), math.ceil(input_size[1] / stride)
    return outputs["pred_masks"][index][:, :, :height, :width]


@torch.no_grad()
def postprocess_video(
    outputs: dict[str, Any],
    index: int = 0,
    *,
    input_size: tuple[int, int],
    orig_size: tuple[int, int],
    top_k: int = 10,
    video_id: int | None = None,
    score_floor: float = 0.001,
    mask_stride: int | None = None,
) -> list[dict[str, Any]]:
    """Turn one clip's predictions into YouTube-VIS result entries.

    Top-``top_k`` (query, class) pairs over ``sigmoid(logits)`` flattened ``[Q*K]``; grouped by query in order of
    first appearance; each query's ``[T, h, w]`` mask logits are cropped to the unpadded region
    ``[:ceil(H/s), :ceil(W/s)]`` (``s`` the mask stride, 4 officially; a no-op for unpadded input, as in the official
    inference), resized bilinearly (``align_corners=False``) straight to the original frame size and thresholded at
    ``sigmoid > 0.5``; queries whose mask is empty in every frame are skipped. Per selected class one entry;
    segmentations are per-frame RLEs (pycocotools, Fortran order, counts as str), or None for every frame when the
    score is below ``score_floor``.

    Args:
        outputs: model outputs with ``pred_logits [B, Q, K]`` and ``pred_masks [B, Q, T, h4, w4]``.
        index: which clip of the batch.
        input_size: (H, W) of the unpadded model input of that clip.
        orig_size: (h, w) of the original video frames.
        top_k: number of (query, class) pairs kept (10 officially).
        video_id: written into every entry when given.
        mask_stride: the stride ``s`` of ``pred_masks`` against the input (``model.mask_out_stride``). None: the
            stride the model recorded in ``outputs["mask_inputs"]["out_stride"]``, or 4 (official outputs carry no
            ``mask_inputs``; their masks are at stride 4).

    Returns:
        list of ``{"video_id"?, "score", "category_id", "segmentations"}`` in the official order.
    """
    logits = outputs["pred_logits"][index].detach().float().cpu()  # [Q, K]
    masks = input_region_masks(outputs, index, input_size, mask_stride).detach().float()  # [Q, T, h, w]
    num_classes = logits.shape[-1]
    scores = logits.sigmoid()
    flat = scores.flatten(0)
    _, top_idx = torch.topk(flat, k=min(top_k, flat.numel()))
    hits: dict[int, list[int]] = {}
    for idx in top_idx.tolist():
        hits.setdefault(idx // num_classes, []).append(idx % num_classes)
    out_h, out_w = int(orig_size[0]), int(orig_size[1])
    results = []
    for query, classes in hits.items():
        resized = F.interpolate(masks[query][:, None], (out_h, out_w), mode="bilinear", align_corners=False)
        binary = resized.sigmoid().cpu().numpy() > 0.5  # [T, 1, h, w]
        if binary.max() == 0:
            continue
        for cls in classes:
            score = float(scores[query, cls].numpy())
            entry: dict[str, Any] = {} if video_id is None else {"video_id": video_id}
            entry["score"] = score
            entry["category_id"] = int(cls)
            if score < score_floor:
                entry["segmentations"] = [None] * binary.shape[0]
            else:
                entry["segmentations"] = [_encode_rle(binary[t, 0].astype(np.uint8)) for t in range(binary.shape[0])]
            results.append(entry)
    return results
