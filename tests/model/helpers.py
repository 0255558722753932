"""Tiny configurations and synthetic clips shared by the model tests."""

from __future__ import annotations

import torch

from seqformer.model import ModelConfig

TINY = dict(
    hidden_dim=32,
    dim_feedforward=64,
    enc_layers=1,
    dec_layers=1,
    nheads=8,
    num_queries=12,
    num_classes=42,
    num_frames=2,
    msda_backend="reference",
)


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def synthetic_target(num_instances: int, num_frames: int, h: int, w: int, *, seed: int = 0) -> dict:
    """Rectangles as masks and their normalised cxcywh boxes (absent frames: 1e-6 box, empty mask)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num_instances, num_frames, h, w, dtype=torch.bool)
    boxes = torch.full((num_instances, num_frames, 4), 1e-6)
    for i in range(num_instances):
        for t in range(num_frames):
            y0 = int(torch.randint(0, h // 2, (1,), generator=g))
            x0 = int(torch.randint(0, w // 2, (1,), generator=g))
            y1 = y0 + int(torch.randint(4, h // 2, (1,), generator=g))
            x1 = x0 + int(torch.randint(4, w // 2, (1,), generator=g))
            masks[i, t, y0:y1, x0:x1] = True
            boxes[i, t] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    labels = torch.randint(1, 41, (num_instances,), generator=g)
    return {
        "labels": labels,
        "boxes": boxes,
        "masks": masks,
        "valid": torch.ones(num_instances, num_frames, dtype=torch.bool),
    }
