"""The two non-official switches for small models trained from scratch: stride-4 mask features and the
mask-shape class head. Both are off by default (the official state dict is covered by test_state_dict)."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import ModelConfig, build_criterion, build_model
from seqformer.model.mask_head import dynamic_mask_logits
from tests.model.helpers import synthetic_target, tiny_config


def test_defaults_add_nothing():
    cfg = ModelConfig()
    assert cfg.mask_feat_stride == 8 and cfg.mask_class_head is False
    keys = build_model(tiny_config()).state_dict().keys()
    assert not any(k.startswith(("mask_head.fine", "mask_shape_head")) for k in keys)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"mask_feat_stride": 2}, "mask_feat_stride must be 8"),
        ({"mask_feat_stride": 4, "mask_out_stride": 8}, "mask_out_stride must divide model.mask_feat_stride"),
        ({"mask_feat_stride": 4, "backbone": "swin_l"}, "needs a ResNet backbone"),
    ],
)
def test_bad_mask_feature_stride_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_dynamic_head_places_stride4_locations_at_cell_centres():
    # 8 feature channels (all zero); the three dynamic layers pass the relative x coordinate through channel 0
    params = torch.zeros(1, 80 + 64 + 8 + 8 + 8 + 1, dtype=torch.float64)
    params[0, 0] = 1.0  # layer 1 [8 out, 10 in]: out 0 <- in 0 (rel x)
    params[0, 80] = 1.0  # layer 2 [8, 8]: out 0 <- in 0
    params[0, 80 + 64] = 1.0  # layer 3 [1, 8]: out 0 <- in 0
    feats = torch.zeros(8, 3, 5, dtype=torch.float64)
    ref = torch.tensor([[13.0, 5.0]], dtype=torch.float64)
    out = dynamic_mask_logits(feats, params, ref, feat_stride=4, out_stride=4)
    expected = (13.0 - (4 * torch.arange(5, dtype=torch.float64) + 2)).clamp(min=0).expand(3, 5)
    torch.testing.assert_close(out[0], expected)


def test_stride4_mask_features_keep_the_output_contract_and_train_the_new_branch():
    torch.manual_seed(0)
    cfg = tiny_config(mask_feat_stride=4, num_classes=5)
    model = build_model(cfg).train()
    keys = model.state_dict().keys()
    assert {"mask_head.fine_proj.weight", "mask_head.fine.weight"} <= set(keys)
    assert model.mask_head.fine_proj.in_channels == 256  # ResNet-50 layer1
    out = model([torch.randn(2, 3, 64, 96)])
    assert out["mask_inputs"]["mask_feats"].shape[-2:] == (16, 24)  # stride 4 of the padded 64x96 clip
    target = synthetic_target(2, 2, 64, 96, seed=1)
    target["labels"] = torch.tensor([1, 3])
    criterion = build_criterion(cfg)
    criterion.total_loss(criterion(out, [target])).backward()
    assert model.mask_head.fine_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        masks = model([torch.randn(2, 3, 64, 96)])["pred_masks"]
    assert masks.shape == (1, cfg.num_queries, 2, 16, 24)


def test_mask_shape_head_starts_as_a_no_op_and_reads_detached_silhouettes():
    clip = torch.randn(2, 3, 64, 96)
    torch.manual_seed(0)
    plain = build_model(tiny_config(num_classes=5)).eval()
    torch.manual_seed(0)
    model = build_model(tiny_config(num_classes=5, mask_class_head=True)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model([clip])["pred_logits"], plain([clip])["pred_logits"], rtol=0, atol=0)
    torch.nn.init.normal_(model.mask_shape_head.net[-1].weight)
    captured = {}
    model.mask_shape_head.net[0].register_forward_hook(lambda m, i, o: captured.__setitem__("crops", i[0]))
    model.train()
    out = model([clip])
    assert not torch.equal(out["pred_logits"].detach(), plain.train()([clip])["pred_logits"].detach())
    out["pred_logits"][..., 1].sum().backward()  # one class: the head's logits sum to zero over the classes
    assert model.mask_shape_head.net[0].weight.grad.abs().sum() > 0
    # the class loss does not reach the masks or the boxes through the silhouettes
    assert model.mask_head.lay2.weight.grad is None
    assert all(p.grad is None for p in model.controller.parameters())
    crops = captured["crops"]
    assert crops.shape == (2 * 12, 1, 16, 16) and 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0


def test_mask_shape_head_crops_the_mask_inside_the_box():
    from seqformer.model.shape_head import MaskShapeHead

    head = MaskShapeHead(num_classes=3)
    captured = {}
    head.net[0].register_forward_hook(lambda m, i, o: captured.__setitem__("crops", i[0]))
    logits = torch.full((1, 1, 1, 16, 24), -30.0)  # [B, Q, T, h4, w4] of a 64x96 clip
    logits[0, 0, 0, 4:12, 6:14] = 30.0  # a square in pixels x 24..56, y 16..48
    boxes = torch.tensor([[[[40 / 96, 32 / 64, 32 / 96, 32 / 64]]]])  # the square's box, cxcywh
    out = head(logits, boxes, torch.tensor([[64, 96]]), mask_stride=4)
    assert out.shape == (1, 1, 3) and torch.count_nonzero(out) == 0  # zero-initialised last layer
    crops = captured["crops"]
    assert crops.shape == (1, 1, 16, 16)
    assert float(crops[0, 0, 1:-1, 1:-1].min()) > 0.99  # the box holds the square only


def test_mask_shape_head_only_moves_classes_against_each_other():
    from seqformer.model.shape_head import MaskShapeHead

    torch.manual_seed(0)
    head = MaskShapeHead(num_classes=5)
    torch.nn.init.normal_(head.net[-1].weight)
    torch.nn.init.normal_(head.net[-1].bias)
    logits = torch.randn(2, 3, 4, 16, 24)  # [B, Q, T, h4, w4]
    boxes = torch.rand(2, 4, 3, 4) * 0.5 + 0.25
    out = head(logits, boxes, torch.tensor([[64, 96], [60, 90]]), mask_stride=4)
    assert out.shape == (2, 3, 5) and out.abs().max() > 1e-3
    torch.testing.assert_close(out.sum(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)
