"""Video Hungarian matcher: one assignment per clip between queries and target instances over all frames."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from seqformer.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou


def target_boxes(target: dict, num_frames: int) -> torch.Tensor:
    """A clip target's boxes as ``[N, T, 4]`` (accepts ``[N, T, 4]`` or the official instance-major ``[N*T, 4]``)."""
    boxes = target["boxes"]
    if boxes.dim() == 2:
        boxes = boxes.reshape(-1, num_frames, 4)
    if boxes.dim() != 3 or boxes.shape[1:] != (num_frames, 4):
        raise ValueError(f"target 'boxes' must be [N, {num_frames}, 4], got shape {tuple(target['boxes'].shape)}")
    return boxes


class VideoHungarianMatcher(nn.Module):
    """Match queries to instances with ``C = w_bbox * L2 + w_class * focal + w_giou * (-mean_t GIoU)``.

    The box cost is the Euclidean distance (``torch.cdist``) between the 4T-vectors of all frames' boxes (not L1 as
    in Deformable DETR); absent frames are matched like present ones (their target box is the 1e-6 box).
    """

    def __init__(
        self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, focal_alpha: float = 0.25
    ) -> None:  # noqa: E501
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("matcher costs cannot all be 0 (model.set_cost_class/set_cost_bbox/set_cost_giou)")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = 2.0

    def cost_matrix(self, outputs: dict, targets: list[dict]) -> torch.Tensor:
        """Cost of every (query, target) pair of the whole batch -> ``[B, Q, sum_b N_b]`` (computed batched, as
        officially, so the numbers are the same)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch_size, num_queries = logits.shape[:2]
        num_frames = boxes.shape[1]
        out_prob = logits.flatten(0, 1).sigmoid()  # [B*Q, K]
        out_bbox = boxes.permute(0, 2, 1, 3).flatten(0, 1)  # [B*Q, T, 4]
        tgt_ids = torch.cat([t["labels"] for t in targets]).long()
        tgt_bbox = torch.cat([target_boxes(t, num_frames) for t in targets]).to(out_bbox)  # [N, T, 4]
        cost_bbox = torch.cdist(out_bbox.flatten(1, 2), tgt_bbox.flatten(1, 2))
        cost_giou = 0
        for i in range(num_frames):
            cost_giou = cost_giou + -generalized_box_iou(
                box_cxcywh_to_xyxy(out_bbox[:, i]), box_cxcywh_to_xyxy(tgt_bbox[:, i])
            )
        cost_giou = cost_giou / num_frames
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg_cost = (1 - alpha) * (out_prob**gamma) * (-(1 - out_prob + 1e-8).log())
        pos_cost = alpha * ((1 - out_prob) ** gamma) * (-(out_prob + 1e-8).log())
        cost_class = pos_cost[:, tgt_ids] - neg_cost[:, tgt_ids]
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        return cost.view(batch_size, num_queries, -1)

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match one decoder layer's predictions to the targets.

        Args:
            outputs: ``pred_logits [B, Q, K]`` and ``pred_boxes [B, T, Q, 4]`` (normalised cxcywh).
            targets: ``B`` dicts with ``labels`` int64 ``[N_b]`` and ``boxes`` ``[N_b, T, 4]``.

        Returns:
            ``B`` pairs ``(query_idx, target_idx)`` of int64 tensors of length ``min(Q, N_b)``, query indices
            ascending; each target is matched to at most one query and vice versa.
        """
        if len(targets) != outputs["pred_logits"].shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {outputs['pred_logits'].shape[0]} clips")
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        cost = self.cost_matrix(outputs, targets).float().cpu()
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]
