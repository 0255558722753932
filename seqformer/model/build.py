"""Builders (``build_model``, ``build_criterion``) and the official optimiser parameter groups."""

from __future__ import annotations

from typing import Any

from torch import nn

from seqformer.model.config import ModelConfig
from seqformer.model.seqformer import SeqFormer

BACKBONE_NAMES = ("backbone.0",)
LINEAR_PROJ_NAMES = ("reference_points", "sampling_offsets")


def build_model(cfg: ModelConfig | None = None) -> SeqFormer:
    """Build SeqFormer (random init except a local ``cfg.pretrained_backbone`` file; nothing is downloaded)."""
    return SeqFormer(cfg if cfg is not None else ModelConfig())
