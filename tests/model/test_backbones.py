"""Other backbones keep the official key layout (Swin-L: the official repository's ``swin_l_p4w12``)."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import ModelConfig, build_model
from seqformer.model.checkpoint import infer_config_fields

SMALL = dict(hidden_dim=64, dim_feedforward=64, enc_layers=1, dec_layers=1, num_queries=10, msda_backend="reference")


def test_resnext101_is_64x4d_with_grouped_convs_and_is_recognised():
    model = build_model(ModelConfig(backbone="resnext101", **SMALL))
    state = model.state_dict()
    assert state["detr.backbone.0.body.layer1.0.conv2.weight"].shape == (256, 4, 3, 3)  # 64 groups of width 4
    assert "detr.backbone.0.body.layer3.22.conv1.weight" in state
    assert infer_config_fields(state)["backbone"] == "resnext101"


@pytest.mark.slow
def test_swin_l_layout_and_forward():
    model = build_model(ModelConfig(backbone="swin_l", **SMALL)).eval()
    state = model.state_dict()
    body = "detr.backbone.0.body."
    assert state[body + "patch_embed.proj.weight"].shape == (192, 3, 4, 4)
    assert state[body + "layers.2.blocks.17.attn.relative_position_bias_table"].shape == (23 * 23, 24)
    assert state[body + "layers.2.blocks.0.attn.relative_position_index"].shape == (144, 144)
    assert state[body + "layers.2.downsample.reduction.weight"].shape == (1536, 3072)
    assert body + "layers.3.downsample.reduction.weight" not in state
    assert [state[f"{body}norm{i}.weight"].shape[0] for i in range(4)] == [192, 384, 768, 1536]
    assert state["detr.input_proj.3.0.weight"].shape == (64, 1536, 3, 3)
    assert sum(p.numel() for n, p in model.named_parameters() if "backbone" in n) == 195_201_204
    assert infer_config_fields(state)["backbone"] == "swin_l"
    with torch.no_grad():
        out = model([torch.randn(1, 3, 96, 128)])
    assert out["pred_masks"].shape == (1, 10, 1, 24, 32)
