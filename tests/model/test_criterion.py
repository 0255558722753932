"""Criterion values against a small case computed by hand (plain Python formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from seqformer.model import ModelConfig, build_criterion


def _focal(x, y, alpha=0.25):
    p = 1 / (1 + math.exp(-x))
    ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    return (alpha * y + (1 - alpha) * (1 - y)) * ce * (1 - p_t) ** 2


def _giou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


@pytest.fixture
def small_case():
    # 1 clip, 2 queries, 3 classes, 2 frames; stride-4 masks of 2x2 -> padded input 8x8
    logits = torch.tensor([[[0.5, -1.0, 2.0], [-2.0, 1.5, 0.0]]])
    boxes = torch.tensor(
        [[[[0.5, 0.5, 0.4, 0.4], [0.2, 0.3, 0.2, 0.2]], [[0.55, 0.5, 0.3, 0.4], [0.25, 0.3, 0.2, 0.3]]]]
    )
    masks = torch.tensor(
        [
            [[[1.0, -1.0], [0.5, -2.0]], [[-1.0, 2.0], [0.0, 1.0]]],
            [[[3.0, -3.0], [0.0, 0.0]], [[-0.5, 0.5], [1.0, -1.0]]],
        ]
    )[None]
    outputs = {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": masks}
    gt_masks = torch.zeros(1, 2, 7, 8, dtype=torch.bool)  # 7x8 input, padded to 8x8 by the criterion
    gt_masks[0, 0, 2, 2] = True
    gt_masks[0, 1, 6, 6] = True
    gt_masks[0, 1, 2, 6] = True
    target = {
        "labels": torch.tensor([1]),
        "boxes": torch.tensor([[[0.25, 0.3, 0.2, 0.25], [1e-6] * 4]]),
        "masks": gt_masks,
    }
    return outputs, target


def test_losses_equal_hand_computation(small_case):
    outputs, target = small_case
    cfg = ModelConfig(num_classes=3, aux_loss=False)
    criterion = build_criterion(cfg)
    ((q_idx, t_idx),) = criterion.matcher(outputs, [target])
    assert q_idx.tolist() == [1] and t_idx.tolist() == [0]  # query 1 is close to the target box and says class 1
    losses = criterion(outputs, [target])

    logits = outputs["pred_logits"][0].tolist()
    loss_ce = sum(_focal(logits[q][k], 1.0 if (q, k) == (1, 1) else 0.0) for q in range(2) for k in range(3))
    pred = outputs["pred_boxes"][0, :, 1].tolist()
    tgt = target["boxes"][0].tolist()
    loss_bbox = sum(abs(p - t) for f in range(2) for p, t in zip(pred[f], tgt[f])) / 2
    loss_giou = sum(1 - _giou(pred[f], tgt[f]) for f in range(2)) / 2
    mask_logits = outputs["pred_masks"][0, 1].flatten().tolist()
    # GT sampled at rows/cols 2 and 6 of the 8x8 padded mask
    gt = [[[1, 0], [0, 0]], [[0, 1], [0, 1]]]
    gt_flat = [float(v) for frame in gt for row in frame for v in row]
    loss_mask = sum(_focal(x, y) for x, y in zip(mask_logits, gt_flat)) / len(gt_flat)
    sig = [1 / (1 + math.exp(-x)) for x in mask_logits]
    loss_dice = 1 - (2 * sum(s * y for s, y in zip(sig, gt_flat)) + 1) / (sum(sig) + sum(gt_flat) + 1)

    expected = {
        "loss_ce": loss_ce,
        "loss_bbox": loss_bbox,
        "loss_giou": loss_giou,
        "loss_mask": loss_mask,
        "loss_dice": loss_dice,
    }
    for key, value in expected.items():
        assert math.isclose(losses[key].item(), value, rel_tol=1e-5), key
    assert losses["class_error"].item() == 0.0


def test_weight_dict_is_official():
    weights = build_criterion(ModelConfig()).weight_dict
    assert weights["loss_ce"] == 2 and weights["loss_bbox"] == 5 and weights["loss_giou"] == 2
    assert weights["loss_mask"] == 2 and weights["loss_dice"] == 5
    assert weights["loss_dice_4"] == 5 and "loss_ce_5" not in weights and weights["loss_ce_enc"] == 2
    assert len(weights) == 5 * 7


def test_empty_targets_give_finite_losses(small_case):
    outputs, _ = small_case
    empty = {
        "labels": torch.zeros(0, dtype=torch.int64),
        "boxes": torch.zeros(0, 2, 4),
        "masks": torch.zeros(0, 2, 8, 8, dtype=torch.bool),
    }
    losses = build_criterion(ModelConfig(num_classes=3, aux_loss=False))(outputs, [empty])
    assert losses["loss_bbox"].item() == 0 and losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    logits = outputs["pred_logits"][0].flatten().tolist()
    assert math.isclose(losses["loss_ce"].item(), sum(_focal(x, 0.0) for x in logits), rel_tol=1e-5)


def test_masks_larger_than_the_padded_input_are_refused(small_case):
    outputs, target = small_case
    target["masks"] = torch.zeros(1, 2, 12, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="padded input size"):
        build_criterion(ModelConfig(num_classes=3, aux_loss=False))(outputs, [target])
