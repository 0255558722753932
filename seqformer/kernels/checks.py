"""Validation of the public ``ms_deform_attn`` arguments, with messages that say what was expected.

Axis letters: N batch, S value length (sum of h_l * w_l), M heads, D channels per head, Lq queries, L levels,
P points per level and head.
"""

from __future__ import annotations

import torch

VALUE_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_NAMES = ("value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights")


def check_inputs(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    """Raises TypeError / ValueError unless the five tensors form a valid call (see ``ms_deform_attn``).

    Reads ``spatial_shapes`` and ``level_start_index`` (L x 3 integers; one small device-to-host copy on a GPU) to
    check them against the value length. Contiguity is not required: the caller makes the tensors contiguous.
    """
    tensors = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for name, tensor in zip(_NAMES, tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    _check_ranks_and_dtypes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    for name, tensor in zip(_NAMES[1:], tensors[1:]):
        if tensor.device != value.device:
            raise ValueError(
                f"ms_deform_attn: {name} is on {tensor.device} but value is on {value.device}; "
                "move all five inputs to one device"
            )
    num_batch, num_value, num_heads, _ = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != num_batch or sampling_locations.shape[2] != num_heads:
        raise ValueError(
            f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} must be [N, Lq, M, L, P, 2] with "
            f"N={num_batch} and M={num_heads} from value {tuple(value.shape)}"
        )
    expected = (num_batch, num_queries, num_heads, num_levels, num_points)
    if tuple(attention_weights.shape) != expected:
        raise ValueError(
            f"ms_deform_attn: attention_weights must have shape [N, Lq, M, L, P] = {expected} to match "
            f"sampling_locations {tuple(sampling_locations.shape)}, got {tuple(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (num_levels, 2):
        raise ValueError(
            f"ms_deform_attn: spatial_shapes must have shape [L, 2] = ({num_levels}, 2) (L from sampling_locations), "
            f"got {tuple(spatial_shapes.shape)}"
        )
    if tuple(level_start_index.shape) != (num_levels,):
        raise ValueError(
            f"ms_deform_attn: level_start_index must have shape [L] = ({num_levels},), "
            f"got {tuple(level_start_index.shape)}"
        )
    _check_levels(spatial_shapes.tolist(), level_start_index.tolist(), num_value)


def _check_ranks_and_dtypes(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> None:
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be 4-D [N, S, M, D], got shape {tuple(value.shape)}")
    if value.dtype not in VALUE_DTYPES:
        raise TypeError(f"ms_deform_attn: value must be float64, float32, float16 or bfloat16, got {value.dtype}")
    if value.shape[3] == 0:
        raise ValueError(f"ms_deform_attn: value needs at least one channel per head, got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            "ms_deform_attn: sampling_locations must be 6-D [N, Lq, M, L, P, 2] (last axis x, y), "
            f"got shape {tuple(sampling_locations.shape)}"
        )
    for name, tensor in (("sampling_locations", sampling_locations), ("attention_weights", attention_weights)):
        if not tensor.is_floating_point():
            raise TypeError(f"ms_deform_attn: {name} must be a floating-point tensor, got {tensor.dtype}")
    for name, tensor in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if tensor.dtype != torch.int64:
            raise TypeError(f"ms_deform_attn: {name} must be int64 (torch.long), got {tensor.dtype}")


def _check_levels(shapes: list[list[int]], starts: list[int], num_value: int) -> None:
    start = 0
    for level, ((height, width), given_start) in enumerate(zip(shapes, starts)):
        if height < 1 or width < 1:
            raise ValueError(f"ms_deform_attn: spatial_shapes[{level}] = ({height}, {width}) must be positive (h, w)")
        if given_start != start:
            raise ValueError(
                f"ms_deform_attn: level_start_index[{level}] = {given_start}, expected {start} (the running sum of "
                f"h*w over the levels before it); level_start_index must be {_exclusive_cumsum(shapes)}"
            )
        start += height * width
    if start != num_value:
        raise ValueError(
            f"ms_deform_attn: value has S={num_value} rows but spatial_shapes {shapes} sum to {start} (sum of h*w); "
            "value must hold every level's map, flattened and concatenated in level order"
        )


def _exclusive_cumsum(shapes: list[list[int]]) -> list[int]:
    out, total = [], 0
    for height, width in shapes:
        out.append(total)
        total += height * width
    return out
