"""The default model is the official R50 model: keys, shapes, parameter counts and initialisation quirks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from seqformer.model import ModelConfig, build_model, param_groups

MANIFEST = Path(__file__).parent / "data" / "seqformer_r50_state_dict.tsv"


@pytest.fixture(scope="module")
def default_model():
    torch.manual_seed(0)
    return build_model(ModelConfig())


def _manifest() -> dict[str, tuple[int, ...]]:
    rows = [line.rstrip("\n").split("\t") for line in MANIFEST.read_text().splitlines()[1:]]
    return {key: tuple(int(x) for x in shape.split("x")) for key, shape, _ in rows}


def test_state_dict_equals_the_official_manifest(default_model):
    manifest = _manifest()
    state = default_model.state_dict()
    assert len(manifest) == 733
    assert list(state) == list(manifest)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in state.items()} == manifest
    assert all(v.dtype == torch.float32 for v in state.values())


def test_box_heads_are_registered_twice_as_the_same_tensors(default_model):
    state = default_model.state_dict()
    for i in range(6):
        key = f"bbox_embed.{i}.layers.2.bias"
        assert state[f"detr.{key}"].data_ptr() == state[f"detr.transformer.decoder.{key}"].data_ptr()


def test_parameter_counts_and_groups(default_model):
    params = list(default_model.parameters())
    assert sum(p.numel() for p in params) == 48_404_173
    assert sum(p.numel() for p in params if not p.requires_grad) == 222_400
    buffers = sum(b.numel() for b in default_model.buffers())
    assert buffers == 106_240
    groups = param_groups(default_model, 2e-4, 2e-5, 0.1)
    assert [sum(p.numel() for p in g["params"]) for g in groups] == [24_159_243, 23_232_512, 790_018]
    assert [g["lr"] for g in groups] == pytest.approx([2e-4, 2e-5, 2e-5])


def test_initialisation_quirks(default_model):
    detr = default_model.detr
    assert torch.allclose(detr.class_embed[3].bias, torch.full((42,), -math.log(99.0)))
    assert torch.equal(detr.bbox_embed[0].layers[-1].bias, torch.tensor([0.0, 0.0, -2.0, -2.0]))
    for i in range(1, 6):  # only the first layer's copy gets -2 (inherited Deformable-DETR quirk)
        assert torch.equal(detr.bbox_embed[i].layers[-1].bias, torch.zeros(4))
        assert torch.equal(detr.bbox_embed[i].layers[-1].weight, torch.zeros(4, 256))
    attn = detr.transformer.decoder.layers[2].cross_attn
    assert torch.equal(attn.sampling_offsets.weight, torch.zeros_like(attn.sampling_offsets.weight))
    grid = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    for h in range(8):
        theta = 2 * math.pi * h / 8
        direction = torch.tensor([math.cos(theta), math.sin(theta)])
        direction = direction / direction.abs().max()
        for p in range(4):
            for lvl in range(4):
                assert torch.allclose(grid[h, lvl, p], direction * (p + 1), atol=1e-6)
    assert torch.equal(attn.attention_weights.bias, torch.zeros(128))
    assert torch.equal(attn.value_proj.bias, torch.zeros(256))
    assert torch.equal(detr.transformer.reference_points.bias, torch.zeros(2))
    assert torch.equal(default_model.controller.layers[2].bias, torch.zeros(169))
    assert torch.equal(default_model.mask_head.dcn.bias, torch.zeros(256))
    assert torch.equal(detr.input_proj[3][0].bias, torch.zeros(256))


def test_backbone_freezing_rule(default_model):
    body = default_model.detr.backbone[0].body
    for name, p in body.named_parameters():
        trainable = any(s in name for s in ("layer2", "layer3", "layer4"))
        assert p.requires_grad == trainable, name
