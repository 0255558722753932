"""The narrow ResNet-10 used by the CPU demo: feature strides, channels, trainability, forward through SeqFormer."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import ModelConfig, build_model
from seqformer.model.backbone import build_backbone
from seqformer.model.tiny_backbone import TINY_WIDTHS, tiny_resnet


def test_features_have_strides_8_16_32_and_tiny_widths():
    joiner = build_backbone("tiny_resnet", hidden_dim=32, frozen_batch_norm=False, freeze_stem=False)
    images = torch.randn(2, 3, 96, 128)
    feats, masks, poses = joiner(images, torch.zeros(2, 96, 128, dtype=torch.bool))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 12, 16), (128, 6, 8), (256, 3, 4)]
    assert joiner.num_channels == list(TINY_WIDTHS[1:])
    assert all(p.requires_grad for p in joiner.parameters())


def test_official_freezing_rule_applies_too():
    joiner = build_backbone("tiny_resnet", hidden_dim=32, frozen_batch_norm=False, freeze_stem=True)
    frozen = {n for n, p in joiner.named_parameters() if not p.requires_grad}
    assert any("conv1" in n and "layer" not in n for n in frozen) and any("layer1" in n for n in frozen)
    assert not any("layer2" in n or "layer3" in n or "layer4" in n for n in frozen)


def test_no_pretrained_weights_or_dilation():
    with pytest.raises(ValueError, match="no pretrained weights"):
        tiny_resnet(weights="imagenet")
    with pytest.raises(ValueError, match="dilation"):
        tiny_resnet(replace_stride_with_dilation=[False, False, True])


def test_seqformer_with_tiny_backbone_outputs():
    cfg = ModelConfig(
        backbone="tiny_resnet",
        frozen_batch_norm=False,
        freeze_stem=False,
        hidden_dim=32,
        dim_feedforward=64,
        enc_layers=1,
        dec_layers=2,
        nheads=4,
        num_queries=5,
        num_classes=3,
        num_frames=2,
        mask_feat_channels=8,
    )
    out = build_model(cfg).eval()([torch.randn(2, 3, 96, 96)])
    assert out["pred_logits"].shape == (1, 5, 3)
    assert out["pred_boxes"].shape == (1, 2, 5, 4)
    assert out["pred_masks"].shape == (1, 5, 2, 24, 24)
