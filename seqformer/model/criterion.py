"""SeqFormer losses: focal class, L1 + GIoU boxes, focal + dice masks, for the last and every auxiliary layer.

Normalisation as officially (reference §10): by the number of target *instances* in the batch (averaged over
distributed workers, at least 1); box losses are also divided by T; the mask focal loss is a mean over all
``T * h4 * w4`` pixels of an instance; dice is computed over all frames jointly. ``valid`` is ignored: absent
frames are supervised towards the 1e-6 box and an empty mask, as the official code does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from seqformer.model.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from seqformer.model.matcher import VideoHungarianMatcher, target_boxes
from seqformer.model.seqformer import matched_query_masks, query_group


def sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:  # noqa: E501
    """RetinaNet focal loss of ``[N, D, ...]`` logits, mean over dim 1, summed, divided by ``num_boxes``."""
    prob = inputs.sigmoid()
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_boxes


def dice_loss(inputs: torch.Tensor, targets: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """``sum_i 1 - (2 sum sigma(x) y + 1) / (sum sigma(x) + sum y + 1)`` over ``[N, D]`` rows, / ``num_boxes``."""
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def build_weight_dict(cfg: Any) -> dict[str, float]:
    """Official weight dict: the five loss weights, their ``_{i}`` copies per earlier layer and ``_enc`` copies."""
    weights = {
        "loss_ce": cfg.cls_loss_coef,
        "loss_bbox": cfg.bbox_loss_coef,
        "loss_giou": cfg.giou_loss_coef,
        "loss_mask": cfg.mask_loss_coef,
        "loss_dice": cfg.dice_loss_coef,
    }
    if cfg.aux_loss:
        aux = {}
        for i in range(cfg.dec_layers - 1):
            aux.update({f"{k}_{i}": v for k, v in weights.items()})
        aux.update({f"{k}_enc": v for k, v in weights.items()})  # never produced (no two-stage), kept as official
        weights.update(aux)
    groups = getattr(cfg, "train_query_groups", 1)
    if groups > 1:  # not official: every further training query group's losses, as the first group's
        weights.update({f"{k}_g{g}": v for g in range(1, groups) for k, v in list(weights.items())})
    if cfg.pooled_class_loss_coef > 0:  # not official: see ModelConfig.pooled_class_loss_coef
        weights["loss_pooled_ce"] = cfg.pooled_class_loss_coef
    return weights


class VideoSetCriterion(nn.Module):
    """Match every decoder layer to the targets and compute the official losses (not part of ``forward``)."""

    def __init__(
        self,
        num_classes: int,
        matcher: VideoHungarianMatcher,
        weight_dict: dict[str, float],
        *,
        focal_alpha: float = 0.25,
        mask_out_stride: int = 4,
        losses: tuple[str, ...] = ("labels", "boxes", "cardinality", "masks"),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.focal_alpha = focal_alpha
        self.mask_out_stride = mask_out_stride
        self.losses = losses

    # -------------------------------------------------------------- single losses
    def loss_labels(
        self, outputs: dict, targets: list[dict], indices: list, num_boxes: float, log: bool = True
    ) -> dict:
        """Sigmoid focal loss over all ``B x Q x K`` logits with one-hot targets (``loss_ce``; ``class_error``)."""
        logits = outputs["pred_logits"]
        batch_idx, src_idx = _src_permutation(indices)
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).long().to(logits.device)
        onehot = torch.zeros_like(logits)
        onehot[batch_idx, src_idx, target_classes_o] = 1
        loss_ce = sigmoid_focal_loss(logits, onehot, num_boxes, alpha=self.focal_alpha, gamma=2) * logits.shape[1]
        losses = {"loss_ce": loss_ce}
        if log:
            matched = logits[batch_idx, src_idx]
            if target_classes_o.numel() == 0:
                accuracy = torch.zeros((), device=logits.device)
            else:
                accuracy = (matched.argmax(-1) == target_classes_o).float().mean() * 100
            losses["class_error"] = 100 - accuracy.detach()
        return losses

    @torch.no_grad()
    def loss_cardinality(self, outputs: dict, targets: list[dict], indices: list, num_boxes: float) -> dict:
        """Logged only: |#queries whose argmax is not the last class - #targets| (meaningless here, as officially)."""
        logits = outputs["pred_logits"]
        tgt_lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=logits.device, dtype=torch.float32)
        card_pred = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        return {"cardinality_error": F.l1_loss(card_pred, tgt_lengths)}

    def loss_boxes(self, outputs: dict, targets: list[dict], indices: list, num_boxes: float) -> dict:
        """L1 and ``1 - GIoU`` over the matched instances' boxes of all frames, each divided by T."""
        boxes = outputs["pred_boxes"]  # [B, T, Q, 4]
        num_frames = boxes.shape[1]
        batch_idx, src_idx = _src_permutation(indices)
        src_boxes = boxes.permute(0, 2, 1, 3)[batch_idx, src_idx]  # [n, T, 4]
        tgt = torch.cat([target_boxes(t, num_frames)[j] for t, (_, j) in zip(targets, indices)]).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes.flatten(1, 2), tgt.flatten(1, 2), reduction="none")
        loss_giou = 0
        for i in range(num_frames):
            giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes[:, i]), box_cxcywh_to_xyxy(tgt[:, i]))
            loss_giou = loss_giou + 1 - torch.diag(giou)
        loss_bbox = loss_bbox / num_frames
        loss_giou = loss_giou / num_frames
        return {"loss_bbox": loss_bbox.sum() / num_boxes, "loss_giou": loss_giou.sum() / num_boxes}

    def loss_masks(self, outputs: dict, targets: list[dict], indices: list, num_boxes: float) -> dict:
        """Focal and dice losses of the matched queries' stride-4 mask logits against strided GT masks."""
        src_masks = self._matched_masks(outputs, indices)  # [n, T, h4, w4]
        h4, w4 = src_masks.shape[-2:]
        tgt = torch.cat([self._strided_target_masks(t, j, h4, w4) for t, (_, j) in zip(targets, indices)])
        tgt = tgt.to(src_masks)
        src_flat, tgt_flat = src_masks.flatten(1), tgt.flatten(1)
        return {
            "loss_mask": sigmoid_focal_loss(src_flat, tgt_flat, num_boxes, alpha=self.focal_alpha),
            "loss_dice": dice_loss(src_flat, tgt_flat, num_boxes),
        }

    def _matched_masks(self, outputs: dict, indices: list) -> torch.Tensor:
        if "pred_masks" in outputs:  # all-query masks already computed (eval forward)
            pred = outputs["pred_masks"]  # [B, Q, T, h4, w4]
            return torch.cat([pred[b, i] for b, (i, _) in enumerate(indices)])
        if "mask_inputs" not in outputs:
            raise ValueError("outputs need 'pred_masks' or 'mask_inputs' (as returned by SeqFormer.forward)")
        return matched_query_masks(outputs["mask_inputs"], indices)

    def _strided_target_masks(self, target: dict, tgt_idx: torch.Tensor, h4: int, w4: int) -> torch.Tensor:
        """Pad a clip's ``[N, T, h, w]`` masks bottom/right to the padded input size and slice ``[2::4, 2::4]``."""
        masks = target["masks"]
        masks = padded_target_masks(masks[tgt_idx.to(masks.device)], h4 * self.mask_out_stride,
                                    w4 * self.mask_out_stride, torch.uint8)
        start = self.mask_out_stride // 2
        return masks[..., start :: self.mask_out_stride, start :: self.mask_out_stride]

    # -------------------------------------------------------------- all layers
    def layer_losses(self, outputs: dict, targets: list[dict], num_boxes: float, log: bool) -> dict[str, torch.Tensor]:
        """Match one layer and compute its losses."""
        indices = self.matcher(outputs, targets)
        losses: dict[str, torch.Tensor] = {}
        for name in self.losses:
            if name == "labels":
                losses.update(self.loss_labels(outputs, targets, indices, num_boxes, log=log))
            elif name == "boxes":
                losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
            elif name == "cardinality":
                losses.update(self.loss_cardinality(outputs, targets, indices, num_boxes))
            elif name == "masks":
                losses.update(self.loss_masks(outputs, targets, indices, num_boxes))
            else:
                raise ValueError(f"unknown loss {name!r}; expected labels, boxes, cardinality or masks")
        return losses

    @staticmethod
    def loss_pooled_labels(pooled_class_map: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """Auxiliary (not official) mask-pooled classification loss ``loss_pooled_ce``.

        Each instance's visible mask in each frame, as a fraction of every stride-8 cell, weights an average of that
        frame's per-position class logits; cross-entropy against the instance's class, averaged over the
        (instance, frame) pairs whose mask covers at least half a cell.

        Args:
            pooled_class_map: ``[B, T, K, h8, w8]`` logits of the stride-8 positions of the padded clips.
            targets: the criterion's targets (``labels``, ``masks`` ``[N, T, H_i, W_i]``).
        """
        _, _, _, h8, w8 = pooled_class_map.shape
        logits, labels = [], []
        for clip_map, target in zip(pooled_class_map, targets):
            masks = target["masks"]
            if masks.shape[0] == 0:
                continue
            padded = padded_target_masks(masks, 8 * h8, 8 * w8, clip_map.dtype)
            cover = F.avg_pool2d(padded.flatten(0, 1), 8).view(masks.shape[0], masks.shape[1], h8, w8)
            area = cover.sum((-2, -1))  # [N, T] in cells
            pooled = torch.einsum("nthw,tkhw->ntk", cover, clip_map) / area.clamp(min=1e-6)[..., None]
            keep = area >= 0.5
            logits.append(pooled[keep])
            labels.append(target["labels"].to(clip_map.device)[:, None].expand_as(area)[keep])
        if sum(len(x) for x in labels) == 0:
            return pooled_class_map.sum() * 0.0  # keeps every parameter in the graph (DDP)
        return F.cross_entropy(torch.cat(logits), torch.cat(labels).long())

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Compute all losses.

        Args:
            outputs: :meth:`SeqFormer.forward` output (train or eval mode).
            targets: one dict per clip: ``labels`` int64 ``[N]``, ``boxes`` ``[N, T, 4]`` normalised cxcywh of the
                unpadded clip, ``masks`` bool ``[N, T, H_i, W_i]`` (``valid`` is accepted and ignored).

        Returns:
            ``loss_ce, loss_bbox, loss_giou, loss_mask, loss_dice`` (+ logged ``class_error``,
            ``cardinality_error``) and their ``_{i}`` copies for auxiliary layer i; ``loss_pooled_ce`` too when
            the model has the (non-official) auxiliary pooled classifier. With ``G`` training query groups
            (``outputs["query_groups"]``, not official) the first group's losses keep these names and group
            ``g >= 1`` adds the same set with the suffix ``_g{g}``, each group matched on its own.
        """
        groups = int(outputs.get("query_groups", 1))
        if groups > 1:
            num_queries = outputs["pred_logits"].shape[1] // groups
            losses = self(query_group(outputs, 0, num_queries), targets)
            for g in range(1, groups):
                part = self(query_group(outputs, g, num_queries), targets)
                losses.update({f"{k}_g{g}": v for k, v in part.items()})
            return losses
        num_boxes = self.num_boxes(targets, outputs["pred_logits"].device)
        losses = self.layer_losses(outputs, targets, num_boxes, log=True)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            layer = self.layer_losses(aux, targets, num_boxes, log=False)
            losses.update({f"{k}_{i}": v for k, v in layer.items()})
        if "pooled_class_map" in outputs and "loss_pooled_ce" in self.weight_dict:
            losses["loss_pooled_ce"] = self.loss_pooled_labels(outputs["pooled_class_map"], targets)
        return losses

    @staticmethod
    def num_boxes(targets: list[dict], device: torch.device) -> float:
        """Number of target instances, averaged over distributed workers, at least 1."""
        count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world = 1
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
            world = dist.get_world_size()
        return torch.clamp(count / world, min=1).item()

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the losses present in ``weight_dict`` (the training objective)."""
        return sum(losses[k] * w for k, w in self.weight_dict.items() if k in losses)


def padded_target_masks(masks: torch.Tensor, pad_h: int, pad_w: int, dtype: torch.dtype) -> torch.Tensor:
    """Pad target masks ``[N, T, h, w]`` bottom/right to the padded input size ``(pad_h, pad_w)`` as ``dtype``."""
    if masks.dim() != 4 or masks.shape[-2] > pad_h or masks.shape[-1] > pad_w:
        raise ValueError(
            f"target 'masks' must be [N, T, h, w] with h <= {pad_h} and w <= {pad_w} (the padded input size), "
            f"got shape {tuple(masks.shape)}"
        )
    return F.pad(masks.to(dtype), (0, pad_w - masks.shape[-1], 0, pad_h - masks.shape[-2]))


def _src_permutation(indices: list) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx
