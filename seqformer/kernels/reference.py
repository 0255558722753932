"""Pure PyTorch reference of multi-scale deformable attention (``grid_sample`` based, differentiable).

Axis letters: N batch, S total value length (sum of h_l * w_l), M heads, D channels per head, Lq queries,
L levels, P sampling points per level and head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention, the source of truth for every compiled kernel.

    Args:
        value: ``[N, S, M, D]`` float values, levels concatenated in ``spatial_shapes`` order.
        spatial_shapes: int64 ``[L, 2]`` (h_l, w_l) of each level.
        level_start_index: int64 ``[L]`` start row of each level in ``S`` (unused here, kept for API symmetry).
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised (x, y); 0..1 spans the whole level map.
        attention_weights: ``[N, Lq, M, L, P]`` weights (already normalised over L*P).
        Locations and weights are cast to the value's dtype (``grid_sample`` needs one dtype).

    Returns:
        ``[N, Lq, M*D]`` head-major output. Bilinear sampling with ``align_corners=False`` and zero padding.
    """
    del level_start_index
    # Same mixed-precision rule as the compiled path: locations and weights follow the value's dtype.
    sampling_locations = sampling_locations.to(value.dtype)
    attention_weights = attention_weights.to(value.dtype)
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    split_sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_list = value.split(split_sizes, dim=1)
    grids = 2 * sampling_locations - 1
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        # [N, h*w, M, D] -> [N*M, D, h, w]
        v = value_list[level].flatten(2).transpose(1, 2).reshape(N * M, D, int(h), int(w))
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [N*M, D, Lq, L, P] weighted by [N*M, 1, Lq, L, P]
    stacked = torch.stack(sampled, dim=-2)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L, P)
    out = (stacked * weights).flatten(-2).sum(-1).view(N, M * D, Lq)
    return out.transpose(1, 2).contiguous()
