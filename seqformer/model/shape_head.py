"""Mask-shape class head: an optional classifier of each query's predicted mask silhouette (not part of SeqFormer).

SeqFormer classifies an instance from its query embedding alone. A model trained from random initialisation on a
small budget learns masks (class-agnostic silhouettes) long before its queries carry shape, so this head reads the
silhouette: each query's mask probabilities in each frame are resampled into its predicted box (``roi_align``,
``size`` x ``size``, mask and box detached so the class loss does not bend them), classified by a small CNN, and
the per-frame logits averaged over the frames and centred over the classes are *added* to the query's class
logits. Centred: the head only moves the classes against each other and leaves the sum of a query's logits (its
objectness) to the query. Duplicate queries on one object share its silhouette; without the centring the
focal loss of the unmatched duplicates pushes every class of that silhouette down and cancels what the matched
query teaches. The last layer starts at zero, so at initialisation the model's logits are SeqFormer's.
``ModelConfig.mask_class_head`` switches it on.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align

from seqformer.model.box_ops import box_cxcywh_to_xyxy


class MaskShapeHead(nn.Module):
    """Silhouette classifier: ``[B, Q, T, h, w]`` mask logits + ``[B, T, Q, 4]`` boxes -> ``[B, Q, K]`` logits."""

    def __init__(self, num_classes: int, size: int = 16, width: int = 32) -> None:
        super().__init__()
        if size % 4 != 0:
            raise ValueError(f"MaskShapeHead size must be a multiple of 4, got {size}")
        self.size = size
        self.net = nn.Sequential(
            nn.Conv2d(1, width // 2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(width * (size // 4) ** 2, 2 * width),
            nn.ReLU(inplace=True),
            nn.Linear(2 * width, num_classes),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(
        self, mask_logits: torch.Tensor, boxes: torch.Tensor, image_sizes: torch.Tensor, mask_stride: int
    ) -> torch.Tensor:
        """Class logits from the silhouettes.

        Args:
            mask_logits: ``[B, Q, T, h, w]`` mask logits at ``mask_stride`` of the padded clips.
            boxes: ``[B, T, Q, 4]`` normalised cxcywh of the unpadded clips.
            image_sizes: int64 ``[B, 2]`` unpadded (h, w).
            mask_stride: pixels per mask cell.

        Returns:
            ``[B, Q, K]`` logits (mean over the frames, centred over the classes).
        """
        b, q, t, h, w = mask_logits.shape
        probs = mask_logits.detach().sigmoid().permute(0, 2, 1, 3, 4).reshape(b * t * q, 1, h, w)
        sizes = image_sizes.to(boxes.dtype).flip(-1).repeat(1, 2)[:, None, None]  # (w, h, w, h)
        xyxy = box_cxcywh_to_xyxy(boxes.detach()) * sizes / mask_stride
        index = torch.arange(b * t * q, device=boxes.device, dtype=boxes.dtype)[:, None]
        rois = torch.cat([index, xyxy.reshape(b * t * q, 4)], 1)
        crops = roi_align(probs, rois, (self.size, self.size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        logits = self.net(crops).view(b, t, q, -1).mean(1)
        return logits - logits.mean(-1, keepdim=True)


__all__ = ["MaskShapeHead"]
