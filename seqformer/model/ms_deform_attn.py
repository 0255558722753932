"""SeqFormer's multi-scale deformable attention module (encode and decode modes) on top of the kernels op.

Axis letters follow ``seqformer.kernels``: N samples (here clips * frames), Lq queries, M heads, L levels,
P points, D = C / M channels per head. Frames are folded into N: the official code calls the op once per frame
with shared weights, which is the same computation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqformer.kernels import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Deformable attention with the official parameter names, including the decoder's ``output_proj_box``.

    In encode mode only ``output_proj`` is used (``output_proj_box`` exists for key-compatibility, as officially).
    In decode mode the sampled features go through both projections: ``output_proj`` for the instance query and
    ``output_proj_box`` for the per-frame box query.
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, *, backend: str = "auto"
    ) -> None:  # noqa: E501
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.output_proj_box = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: zero offset weights, a fixed direction grid as offset bias, zero attention weights."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def project_value(self, memory: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """``[N, S, C]`` memory -> ``[N, S, M, D]`` values with padded positions zeroed."""
        n, s, c = memory.shape
        # projected as [N*S, C] rows (what nn.Linear does for 3-d inputs) so that the product is a base tensor: the
        # masking can then be done in place, also under autograd, without a copying backward (CopySlices)
        value = self.value_proj(memory.reshape(n * s, c))
        if padding_mask is not None:
            value = value.masked_fill_(padding_mask.reshape(n * s, 1), 0.0)
        return value.view(n, s, self.n_heads, c // self.n_heads)

    def sample(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        repeat: int = 1,
    ) -> torch.Tensor:
        """Core sampling shared by both modes.

        Args:
            query: ``[N / repeat, Lq, C]`` queries that predict offsets and weights.
            reference_points: ``[N, Lq, L, 2]`` normalised (x, y), or ``[N, Lq, L, 4]`` (cx, cy, w, h).
            value: ``[N, S, M, D]`` projected values.
            spatial_shapes: int64 ``[L, 2]`` (h, w) per level.
            level_start_index: int64 ``[L]``.
            repeat: each query row serves ``repeat`` consecutive value samples (the first decoder layer's single
                box query drives every frame): offsets and weights are computed once and repeated.

        Returns:
            ``[N, Lq, C]`` sampled features (before the output projections).
        """
        n, lq, _ = query.shape
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if repeat > 1:
            offsets = offsets.repeat_interleave(repeat, dim=0)
            weights = weights.repeat_interleave(repeat, dim=0)
        if reference_points.shape[-1] == 2 and reference_points.requires_grad:
            # decoder layer 0 (references from a linear layer): the official broadcast, whose backward sums the
            # reference gradient over heads and points in its own order
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 2:
            # ref + offset / (w_l, h_l), element for element as officially, but with the small operands expanded
            # over the points first so that both steps run over contiguous rows of L*P*2 values (vectorised)
            # instead of pairs, and the sum is formed in place (the encoder: 6.5M locations per layer for R50).
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)  # [L, 2] (w, h)
            normalizer = normalizer[:, None, :].expand(self.n_levels, self.n_points, 2).reshape(-1)  # [L*P*2]
            refs = reference_points[:, :, None, :, None, :].expand(n * repeat, lq, 1, self.n_levels, self.n_points, 2)
            locations = offsets.reshape(n * repeat, lq, self.n_heads, -1) / normalizer  # [N, Lq, M, L*P*2]
            locations = locations.add_(refs.reshape(n * repeat, lq, 1, -1)).view(offsets.shape)
        elif reference_points.shape[-1] == 4:
            locations = (
                reference_points[:, :, None, :, None, :2]
                + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(f"reference_points must end in 2 or 4 values, got shape {tuple(reference_points.shape)}")
        return ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights, backend=self.backend)
