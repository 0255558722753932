from __future__ import annotations

import argparse
import collections

import pytest
import torch

from seqformer.model import build_model, load_official_state_dict
from seqformer.model.checkpoint import read_checkpoint
from tests.model.helpers import tiny_config


def _official_file(tmp_path, model):
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.detr.backbone.0.body.bn1.num_batches_tracked"] = torch.tensor(5)
    ckpt = {
        "model": state,
        "optimizer": {"state": {}, "param_groups": []},
        "lr_scheduler": {"milestones": collections.Counter({4: 1, 10: 1}), "gamma": 0.1},
        "epoch": 11,
        "args": argparse.Namespace(backbone="resnet50", lr=2e-4),
    }
    path = tmp_path / "official.pth"
    torch.save(ckpt, path)
    return path


def test_official_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model(tiny_config()).eval()
    path = _official_file(tmp_path, source)
    ckpt = read_checkpoint(path)  # weights_only=True with the official non-tensor entries
    target = build_model(tiny_config()).eval()
    report = target.load_official_state_dict(ckpt)
    assert report.ok and report.loaded == len(source.state_dict())
    clips = [torch.randn(2, 3, 64, 96)]
    with torch.no_grad():
        torch.testing.assert_close(target(clips)["pred_masks"], source(clips)["pred_masks"])


def test_strict_load_names_missing_unexpected_and_misshaped_keys():
    model = build_model(tiny_config())
    state = dict(model.state_dict())
    state.pop("controller.layers.0.bias")
    state["detr.extra.weight"] = torch.zeros(1)
    state["detr.query_embed.weight"] = torch.zeros(5, 64)
    with pytest.raises(
        ValueError, match=r"controller\.layers\.0\.bias.*detr\.extra\.weight.*detr\.query_embed\.weight"
    ):
        load_official_state_dict(model, state)
    before = model.detr.query_embed.weight.clone()
    report = load_official_state_dict(model, state, strict=False)
    assert report.missing == ["controller.layers.0.bias"] and report.unexpected == ["detr.extra.weight"]
    assert report.mismatched == [("detr.query_embed.weight", (5, 64), (12, 64))]
    assert torch.equal(model.detr.query_embed.weight, before)


def test_drop_class_head_keeps_fresh_heads():
    source = build_model(tiny_config(num_classes=91))
    target = build_model(tiny_config())
    fresh = target.detr.class_embed[0].weight.clone()
    report = target.load_official_state_dict({"model": source.state_dict()}, drop_class_head=True)
    assert report.ok and report.dropped
    assert torch.equal(target.detr.class_embed[0].weight, fresh)
    torch.testing.assert_close(target.detr.query_embed.weight, source.detr.query_embed.weight)


def test_convert_command(tmp_path, capsys):
    from seqformer.platform.cli import main

    torch.manual_seed(0)
    path = _official_file(tmp_path, build_model(tiny_config()))
    out = tmp_path / "converted.pth"
    assert main(["convert-checkpoint", str(path), str(out)]) == 0
    converted = torch.load(out, weights_only=True)
    assert converted["model_config"]["hidden_dim"] == 32 and converted["model_config"]["num_queries"] == 12
    assert "wrote" in capsys.readouterr().out
    assert main(["convert-checkpoint", str(tmp_path / "missing.pth"), str(out)]) == 1
