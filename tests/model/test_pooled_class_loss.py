"""The optional (non-official) mask-pooled auxiliary classification loss ``loss_pooled_ce``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqformer.model import ModelConfig, build_criterion, build_model
from seqformer.model.criterion import VideoSetCriterion
from tests.model.helpers import synthetic_target, tiny_config


def test_off_by_default_adds_no_parameter_and_no_loss():
    cfg = tiny_config()
    model = build_model(cfg).train()
    assert not any(k.startswith("pooled_class_embed") for k in model.state_dict())
    out = model([torch.randn(2, 3, 64, 64)])
    assert "pooled_class_map" not in out
    assert "loss_pooled_ce" not in build_criterion(cfg).weight_dict
    with pytest.raises(ValueError, match="pooled_class_loss_coef"):
        ModelConfig(pooled_class_loss_coef=-1.0)


def test_pooled_loss_equals_a_hand_computed_mask_average():
    torch.manual_seed(0)
    k, h8, w8 = 5, 2, 3
    logits = torch.randn(1, 2, k, h8, w8, dtype=torch.float64)  # [B, T, K, h8, w8]
    masks = torch.zeros(2, 2, 12, 20, dtype=torch.bool)  # unpadded 12x20 inside the padded 16x24
    masks[0, 0, 0:8, 0:8] = True  # exactly cell (0, 0)
    masks[0, 1, 0:8, 8:20] = True  # all of cell (0, 1), half of cell (0, 2)
    masks[1, 0, 8:12, 0:4] = True  # a quarter of cell (1, 0): below half a cell, left out
    labels = torch.tensor([3, 1])
    loss = VideoSetCriterion.loss_pooled_labels(logits, [{"labels": labels, "masks": masks}])
    first = logits[0, 0, :, 0, 0]
    second = (logits[0, 1, :, 0, 1] * 1.0 + logits[0, 1, :, 0, 2] * 0.5) / 1.5
    expected = F.cross_entropy(torch.stack([first, second]), torch.tensor([3, 3]))
    torch.testing.assert_close(loss, expected)


def test_enabled_loss_trains_the_classifier_and_reaches_the_backbone():
    torch.manual_seed(0)
    cfg = tiny_config(pooled_class_loss_coef=1.5, num_classes=5)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    assert criterion.weight_dict["loss_pooled_ce"] == 1.5
    target = synthetic_target(2, 2, 64, 96, seed=3)
    target["labels"] = torch.tensor([1, 4])
    out = model([torch.randn(2, 3, 64, 96)])
    assert out["pooled_class_map"].shape == (1, 2, 5, 8, 12)
    losses = criterion(out, [target])
    assert losses["loss_pooled_ce"] > 0
    criterion.total_loss(losses).backward()
    assert model.pooled_class_embed.weight.grad.abs().sum() > 0
    assert model.detr.input_proj[0][0].weight.grad.abs().sum() > 0
    # an empty clip still yields a (zero) loss in the graph, so DDP sees every parameter
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 2, 64, 96, dtype=torch.bool)}
    zero = VideoSetCriterion.loss_pooled_labels(model([torch.randn(2, 3, 64, 96)])["pooled_class_map"], [empty])
    assert zero.item() == 0.0 and zero.requires_grad
    # eval mode does not compute the map
    assert "pooled_class_map" not in model.eval()([torch.randn(2, 3, 64, 96)])
