"""The paper's decoder ablations as config switches: plain-mean aggregation and no query decomposition."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import build_model

from .helpers import tiny_config


def _clip(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 3, 64, 64, generator=g)]


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(tiny_config(num_frames=3, dec_layers=2, dropout=0.0, **overrides)).eval()


def test_switches_do_not_change_the_state_dict():
    keys = {k: v.shape for k, v in _model().state_dict().items()}
    for overrides in ({"temporal_aggregation": "mean"}, {"query_decomposition": False}):
        assert {k: v.shape for k, v in _model(**overrides).state_dict().items()} == keys


def test_mean_aggregation_equals_weighted_aggregation_with_uniform_weights():
    weighted, mean = _model(), _model(temporal_aggregation="mean")
    mean.load_state_dict(weighted.state_dict())
    clip = _clip()
    with torch.no_grad():
        differs = (weighted(clip)["pred_logits"] - mean(clip)["pred_logits"]).abs().max()
        for layer in weighted.detr.transformer.decoder.layers:  # constant score -> softmax = 1/T
            layer.time_attention_weights.weight.zero_()
        a, b = weighted(clip), mean(clip)
    assert differs > 1e-4  # the switch is live: learned weights are not uniform
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("decomposed", [True, False])
def test_without_query_decomposition_every_frame_gets_the_same_box(decomposed):
    model = _model(query_decomposition=decomposed)
    with torch.no_grad():
        torch.manual_seed(2)
        for head in model.detr.bbox_embed:  # officially zero-initialised: give the box deltas something to say
            torch.nn.init.normal_(head.layers[-1].weight, std=0.5)
        boxes = model(_clip(1))["pred_boxes"][0]  # [T, Q, 4]
    spread = (boxes - boxes[:1]).abs().max()
    if decomposed:
        assert spread > 1e-4  # per-frame box queries follow each frame
    else:
        assert spread < 1e-6


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="model.temporal_aggregation must be one of"):
        tiny_config(temporal_aggregation="max")
