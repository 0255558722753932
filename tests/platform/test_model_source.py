"""Model specs: our checkpoints, converted and official-format checkpoints load into the right architecture."""

from __future__ import annotations

import argparse

import pytest
import torch

from seqformer.model import ModelConfig, build_model
from seqformer.platform.checkpoint import CheckpointError, save_checkpoint
from seqformer.platform.model_source import load_model

TINY = ModelConfig(backbone="resnet18", frozen_batch_norm=False, hidden_dim=32, dim_feedforward=64, enc_layers=1,
                   dec_layers=1, nheads=4, num_queries=6, num_classes=3, num_frames=2)


def test_our_checkpoint_folder_round_trips(tmp_path):
    model = build_model(TINY)
    save_checkpoint(tmp_path / "ckpt", {"model": model.state_dict(), "model_config": TINY.to_dict()})
    loaded, cfg = load_model(tmp_path / "ckpt")
    assert cfg == TINY and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_official_format_checkpoint_with_namespace_args(tmp_path):
    """Official files are {'model', 'optimizer', ..., 'args': Namespace}; the config is read from the shapes."""
    cfg = ModelConfig(hidden_dim=64, dim_feedforward=128, enc_layers=1, dec_layers=2, num_queries=7, num_classes=42)
    model = build_model(cfg)
    path = tmp_path / "official.pth"
    torch.save({"model": model.state_dict(), "epoch": 11, "args": argparse.Namespace(lr=2e-4)}, path)
    loaded, inferred = load_model(path)
    assert (inferred.hidden_dim, inferred.dec_layers, inferred.num_queries) == (64, 2, 7)
    assert torch.equal(loaded.state_dict()["detr.query_embed.weight"], model.state_dict()["detr.query_embed.weight"])


def test_weights_that_do_not_fit_their_config(tmp_path):
    state = build_model(TINY).state_dict()
    state["detr.query_embed.weight"] = torch.zeros(99, 64)
    save_checkpoint(tmp_path / "bad", {"model": state, "model_config": TINY.to_dict()})
    with pytest.raises(CheckpointError, match=r"(?s)bad: weights do not fit the model config.*query_embed"):
        load_model(tmp_path / "bad")


def test_missing_spec_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_model(tmp_path / "nowhere.pth")
