"""``MSDeformAttn``: the multi-scale deformable attention layer (Deformable-DETR parameter names and init).

Axis letters: N batch, S value length (sum of h_l * w_l), M heads (``n_heads``), D channels per head
(``d_model / n_heads``), Lq queries, L levels (``n_levels``), P points (``n_points``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seqformer.kernels.backend import Backend
from seqformer.kernels.op import ms_deform_attn


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` sampled locations per head and level around its reference point.

    Parameter names match the official module (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``), so official state dicts load unchanged.

    Args:
        d_model: hidden size C; must be divisible by ``n_heads``.
        n_levels: number of feature levels L.
        n_heads: number of heads M.
        n_points: sampling points P per head and level.
        backend: op backend (see ``seqformer.kernels.ms_deform_attn``).
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, backend: Backend = "auto"
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.backend: Backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR initialisation: offsets start on a ring, one direction per head; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        # Head m looks along angle 2*pi*m/M; the direction is scaled so its larger coordinate is 1, and point p
        # sits (p + 1) units out, identically on every level.
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        radii = torch.arange(1, self.n_points + 1, dtype=torch.float32)
        # [M, 1, 1, 2] * [1, 1, P, 1] -> [M, L, P, 2]
        bias = (directions[:, None, None, :] * radii[None, None, :, None]).expand(-1, self.n_levels, -1, -1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attends from ``query`` to the flattened multi-level map ``input_flatten``.

        Args:
            query: ``[N, Lq, C]``.
            reference_points: ``[N, Lq, L, 2]`` normalised ``(x, y)`` per level, or ``[N, Lq, L, 4]`` boxes
                ``(cx, cy, w, h)``; with boxes the offsets are scaled by half the box size over ``n_points``.
            input_flatten: ``[N, S, C]``, levels flattened row-major and concatenated.
            input_spatial_shapes: int64 ``[L, 2]`` ``(h_l, w_l)``.
            input_level_start_index: int64 ``[L]``.
            input_padding_mask: optional bool ``[N, S]``, True at padded positions (their values are zeroed).

        Returns:
            ``[N, Lq, C]``.
        """
        num_batch, num_queries, _ = query.shape
        num_value = input_flatten.shape[1]
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(num_batch, num_value, self.n_heads, self.d_model // self.n_heads)
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(num_batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(num_batch, num_queries, heads, levels * points)
        weights = F.softmax(weights, dim=-1).view(num_batch, num_queries, heads, levels, points)
        locations = self._sampling_locations(reference_points, offsets, input_spatial_shapes)
        output = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, locations, weights, backend=self.backend
        )
        return self.output_proj(output)

    def _sampling_locations(
        self, reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor
    ) -> torch.Tensor:
        """``[N, Lq, M, L, P, 2]`` locations from reference points and raw offsets ``[N, Lq, M, L, P, 2]``."""
        if reference_points.dim() != 4 or reference_points.shape[-1] not in (2, 4):
            raise ValueError(
                "MSDeformAttn: reference_points must be [N, Lq, L, 2] points or [N, Lq, L, 4] boxes, "
                f"got shape {tuple(reference_points.shape)}"
            )
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: divide by (w_l, h_l)
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], dim=-1).to(offsets.dtype)
            return reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        # boxes: offsets are in units of half the box size, spread over n_points
        centers = reference_points[:, :, None, :, None, :2]
        sizes = reference_points[:, :, None, :, None, 2:]
        return centers + offsets / self.n_points * sizes * 0.5
