"""Multi-scale deformable attention (placeholder until the kernels issue lands: reference backend only)."""

from __future__ import annotations

import torch

from seqformer.kernels.reference import ms_deform_attn_reference


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """See ``seqformer.kernels.reference.ms_deform_attn_reference``."""
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


__all__ = ["ms_deform_attn", "ms_deform_attn_reference"]
