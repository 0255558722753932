"""Builders (``build_model``, ``build_criterion``) and the official optimiser parameter groups."""

from __future__ import annotations

from typing import Any

from torch import nn

from seqformer.model.config import ModelConfig
from seqformer.model.criterion import VideoSetCriterion, build_weight_dict
from seqformer.model.matcher import VideoHungarianMatcher
from seqformer.model.seqformer import SeqFormer

BACKBONE_NAMES = ("backbone.0",)
LINEAR_PROJ_NAMES = ("reference_points", "sampling_offsets")


def build_model(cfg: ModelConfig | None = None) -> SeqFormer:
    """Build SeqFormer (random init except a local ``cfg.pretrained_backbone`` file; nothing is downloaded)."""
    return SeqFormer(cfg if cfg is not None else ModelConfig())


def build_matcher(cfg: ModelConfig) -> VideoHungarianMatcher:
    """Video Hungarian matcher with the configured costs."""
    return VideoHungarianMatcher(cfg.set_cost_class, cfg.set_cost_bbox, cfg.set_cost_giou, cfg.focal_alpha)


def build_criterion(cfg: ModelConfig | None = None) -> VideoSetCriterion:
    """Criterion with the official weight dict (five losses, ``_{i}`` per earlier layer, unused ``_enc``)."""
    cfg = cfg if cfg is not None else ModelConfig()
    return VideoSetCriterion(
        cfg.num_classes,
        build_matcher(cfg),
        build_weight_dict(cfg),
        focal_alpha=cfg.focal_alpha,
        mask_out_stride=cfg.mask_out_stride,
    )


def _matches(name: str, keywords: tuple[str, ...]) -> bool:
    return any(k in name for k in keywords)


def param_groups(
    model: nn.Module,
    lr: float,
    lr_backbone: float,
    lr_linear_proj_mult: float,
    *,
    backbone_names: tuple[str, ...] = BACKBONE_NAMES,
    linear_proj_names: tuple[str, ...] = LINEAR_PROJ_NAMES,
) -> list[dict[str, Any]]:
    """The official three AdamW groups, chosen by substring match on parameter names (reference §11).

    Returns:
        ``[{base params, lr}, {names containing 'backbone.0', lr_backbone}, {names containing 'reference_points' or
        'sampling_offsets', lr * lr_linear_proj_mult}]``; frozen parameters are left out, shared ones appear once.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    base = [p for n, p in named if not _matches(n, backbone_names) and not _matches(n, linear_proj_names)]
    backbone = [p for n, p in named if _matches(n, backbone_names)]
    linear_proj = [p for n, p in named if _matches(n, linear_proj_names)]
    return [
        {"params": base, "lr": lr},
        {"params": backbone, "lr": lr_backbone},
        {"params": linear_proj, "lr": lr * lr_linear_proj_mult},
    ]
