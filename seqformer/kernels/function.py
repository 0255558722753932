"""Autograd Function around the compiled multi-scale deformable attention kernels.

Axis letters: N batch, S value length (sum of h_l * w_l), M heads, D channels per head, Lq queries, L levels,
P points per level and head.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch.autograd.function import once_differentiable


class MSDeformAttnFunction(torch.autograd.Function):
    """``out = ms_deform_attn(value, ...)`` through a compiled extension; gradients for value, locations, weights.

    Call ``MSDeformAttnFunction.apply(value, spatial_shapes, level_start_index, sampling_locations,
    attention_weights, extension)`` with contiguous tensors on one device (``seqformer.kernels.ms_deform_attn``
    validates and makes them contiguous). The backward is ``once_differentiable``: the kernels compute exact first
    derivatives; double backward needs the reference backend.
    """

    @staticmethod
    def forward(
        ctx: Any,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        extension: ModuleType,
    ) -> torch.Tensor:
        # Mixed precision: under autocast the value projection may come out in half/bfloat16 while the offset and
        # weight projections (or the float32 reference points added to them) stay float32. The kernels are
        # dispatched on one scalar type, and the value tensor is the large one, so the small location and weight
        # tensors are cast to its dtype here (as mmcv does); their gradients are cast back in backward.
        ctx.input_dtypes = (sampling_locations.dtype, attention_weights.dtype)
        sampling_locations = sampling_locations.to(value.dtype).contiguous()
        attention_weights = attention_weights.to(value.dtype).contiguous()
        ctx.extension = extension
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return extension.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.extension.backward(
            value,
            spatial_shapes,
            level_start_index,
            sampling_locations,
            attention_weights,
            grad_output.to(value.dtype).contiguous(),
        )
        locations_dtype, weights_dtype = ctx.input_dtypes
        return (
            grad_value,
            None,
            None,
            grad_locations.to(locations_dtype),
            grad_weights.to(weights_dtype),
            None,
        )
