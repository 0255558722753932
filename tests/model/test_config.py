from __future__ import annotations

import dataclasses

import pytest

from seqformer.model import ModelConfig


def test_defaults_are_the_official_r50_model():
    cfg = ModelConfig()
    assert (cfg.backbone, cfg.hidden_dim, cfg.dim_feedforward, cfg.enc_layers, cfg.dec_layers) == (
        "resnet50",
        256,
        1024,
        6,
        6,
    )
    assert (cfg.num_queries, cfg.num_classes, cfg.num_frames, cfg.num_feature_levels) == (300, 42, 5, 4)
    assert (cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou) == (2, 5, 2)
    assert (cfg.cls_loss_coef, cfg.bbox_loss_coef, cfg.giou_loss_coef, cfg.mask_loss_coef, cfg.dice_loss_coef) == (
        2,
        5,
        2,
        2,
        5,
    )
    assert cfg.mask_channels == 8 and cfg.with_box_refine and cfg.rel_coord and cfg.pretrained_backbone is None


def test_dict_round_trip_and_unknown_keys():
    cfg = ModelConfig(hidden_dim=64, mask_feat_channels=4)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys.*hiden_dim"):
        ModelConfig.from_dict({"hiden_dim": 3})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().hidden_dim = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("hidden_dim", 48, "model.hidden_dim"),
        ("nheads", 7, "model.nheads"),
        ("num_queries", 0, "model.num_queries"),
        ("num_feature_levels", 5, "model.num_feature_levels"),
        ("num_feature_levels", 2, "model.num_feature_levels"),
        ("dropout", 1.5, "model.dropout"),
        ("backbone", "vgg", "model.backbone"),
        ("msda_backend", "cuda", "model.msda_backend"),
        ("mask_out_stride", 3, "model.mask_out_stride"),
        ("mask_feat_channels", 0, "model.mask_feat_channels"),
    ],
)
def test_invalid_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{field: value})
