"""Typed contracts shared by ``seqformer.model`` and ``seqformer.pipelines``.

The model and the pipelines never import each other; they meet here. Boxes are normalised ``cxcywh`` in ``[0, 1]``
relative to the *unpadded* clip unless a name says ``_xyxy`` or ``_abs``.
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch


class ClipTarget(TypedDict, total=False):
    """Ground truth of one clip of ``T`` frames with ``N`` instances.

    Keys:
        labels: int64 ``[N]`` class indices (YouTube-VIS category ids used directly as indices).
        boxes: float32 ``[N, T, 4]`` normalised cxcywh of the unpadded clip; absent frames hold ``1e-6`` boxes.
        masks: bool ``[N, T, H, W]`` at the clip's (unpadded) input resolution; absent frames are all False.
        valid: bool ``[N, T]`` whether the instance is annotated in that frame.
        size: int64 ``[2]`` (h, w) of the unpadded input frames.
        orig_size: int64 ``[2]`` (h, w) of the original video frames.
        video_id: int video id in the source annotation file.
        frame_ids: int64 ``[T]`` indices of the sampled frames in the source video.
    """

    labels: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor
    size: torch.Tensor
    orig_size: torch.Tensor
    video_id: int
    frame_ids: torch.Tensor


class ClipBatch(TypedDict):
    """What the training ingestion yields and the train loop feeds to the model and the criterion.

    Keys:
        clips: list of ``B`` float32 tensors ``[T, 3, H_i, W_i]``, ImageNet-normalised; sizes may differ per clip.
        targets: list of ``B`` :class:`ClipTarget`.
    """

    clips: list[torch.Tensor]
    targets: list[ClipTarget]


class Predictions(TypedDict, total=False):
    """Raw model outputs.

    Keys:
        pred_logits: ``[B, Q, K]`` class logits (sigmoid / focal style, no "no-object" logit).
        pred_boxes: ``[B, T, Q, 4]`` normalised cxcywh per frame.
        pred_masks: ``[B, Q, T, H/s, W/s]`` mask logits at stride ``s = model.mask_out_stride`` (4 officially) of
            the padded input (eval: all queries).
        aux_outputs: list of the same dicts, one per earlier decoder layer.
    """

    pred_logits: torch.Tensor
    pred_boxes: torch.Tensor
    pred_masks: torch.Tensor
    aux_outputs: list[dict[str, Any]]


class VideoResult(TypedDict):
    """One YouTube-VIS result entry (what ``results.json`` holds).

    Keys:
        video_id: int video id.
        category_id: int category id.
        score: float in ``[0, 1]``.
        segmentations: one compressed RLE dict (``{"size": [h, w], "counts": str}``) or ``None`` per frame.
    """

    video_id: int
    category_id: int
    score: float
    segmentations: list[dict[str, Any] | None]
