"""Input factories and an independent gather-based oracle for the multi-scale deformable attention tests.

Axis letters: N batch, S value length, M heads, D channels per head, Lq queries, L levels, P points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    """One problem size; ``levels`` lists (h, w) per level."""

    batch: int
    heads: int
    channels: int
    queries: int
    levels: tuple[tuple[int, int], ...]
    points: int

    @property
    def id(self) -> str:
        shapes = "-".join(f"{h}x{w}" for h, w in self.levels)
        return f"N{self.batch}_M{self.heads}_D{self.channels}_Lq{self.queries}_L{shapes}_P{self.points}"


def make_inputs(
    case: Case, dtype: torch.dtype = torch.float64, device: str = "cpu", margin: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """``(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)`` for ``case``.

    Locations are uniform in ``[-margin, 1 + margin]`` so some samples fall partly or wholly outside the map.
    """
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(case.levels, dtype=torch.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_value, num_levels = int(sizes.sum()), len(case.levels)
    value = torch.randn(case.batch, num_value, case.heads, case.channels, generator=generator, dtype=torch.float64)
    loc_shape = (case.batch, case.queries, case.heads, num_levels, case.points, 2)
    locations = torch.rand(loc_shape, generator=generator, dtype=torch.float64) * (1 + 2 * margin) - margin
    # Bilinear sampling has kinks where a coordinate crosses a pixel centre; nudge samples off them so that gradients
    # compared across dtypes (or by finite differences) are not on either side of a kink by rounding alone.
    for level, (height, width) in enumerate(case.levels):
        for axis, size in ((0, width), (1, height)):
            coord = locations[:, :, :, level, :, axis]
            pixel = coord * size - 0.5
            near = (pixel - pixel.round()).abs() < 1e-3
            coord += near * (2e-3 / size)
    weights = torch.rand(loc_shape[:-1], generator=generator, dtype=torch.float64)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    return tuple(
        t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
        for t in (value, shapes, starts, locations, weights)
    )


def gather_oracle(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The op written a second way (explicit corner gathers, no ``grid_sample``), to check the reference itself."""
    num_batch, _, num_heads, channels = value.shape
    _, num_queries, _, _, num_points, _ = sampling_locations.shape
    out = value.new_zeros(num_batch, num_queries, num_heads, channels)
    batch_idx = torch.arange(num_batch)[:, None, None, None]
    head_idx = torch.arange(num_heads)[None, None, :, None]
    for level, ((height, width), start) in enumerate(zip(spatial_shapes.tolist(), level_start_index.tolist())):
        x = sampling_locations[:, :, :, level, :, 0] * width - 0.5  # [N, Lq, M, P]
        y = sampling_locations[:, :, :, level, :, 1] * height - 0.5
        x0, y0 = x.floor(), y.floor()
        for dy in (0, 1):
            for dx in (0, 1):
                cx, cy = x0 + dx, y0 + dy
                weight = (1 - (x - cx).abs()) * (1 - (y - cy).abs())
                inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
                rows = start + (cy.clamp(0, height - 1) * width + cx.clamp(0, width - 1)).long()
                taps = value[batch_idx, rows, head_idx]  # [N, Lq, M, P, D]
                coeff = torch.where(inside, weight * attention_weights[:, :, :, level], torch.zeros_like(weight))
                out = out + (coeff[..., None] * taps).sum(3)
    return out.flatten(2)
