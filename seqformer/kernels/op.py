"""The public multi-scale deformable attention op: validation, backend choice, dispatch.

Axis letters: N batch, S value length (sum of h_l * w_l), M heads, D channels per head, Lq queries, L levels,
P points per level and head.
"""

from __future__ import annotations

import torch

from seqformer.kernels.backend import Backend, resolve_backend
from seqformer.kernels.checks import check_inputs
from seqformer.kernels.function import MSDeformAttnFunction
from seqformer.kernels.reference import ms_deform_attn_reference


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Multi-scale deformable attention: per query and head, a weighted sum of bilinear samples over levels/points.

    ``out[n, q, m*D:(m+1)*D] = sum_{l,p} A[n,q,m,l,p] * bilinear(V_l[n, :, :, m, :], x * w_l - 0.5, y * h_l - 0.5)``
    with zero padding outside the map (``F.grid_sample``, ``align_corners=False``).

    Args:
        value: ``[N, S, M, D]`` float64/float32/float16/bfloat16; levels flattened row-major and concatenated.
        spatial_shapes: int64 ``[L, 2]``, ``(h_l, w_l)`` of each level; ``sum(h_l * w_l) == S``.
        level_start_index: int64 ``[L]``, first row of each level in ``S`` (``[0, h_0 w_0, ...]``).
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)``: 0..1 spans the whole level map; values
            outside contribute zero. Cast to the value's dtype inside the op.
        attention_weights: ``[N, Lq, M, L, P]`` (normally softmaxed over ``L*P``). Cast to the value's dtype.
        backend: ``"auto"`` (compiled when it builds for this device, decided once per process, else reference;
            ``$SEQFORMER_MSDA_BACKEND`` overrides), ``"compiled"`` (raises if unavailable) or ``"reference"``.

    Returns:
        ``[N, Lq, M*D]`` in the value's dtype, head-major channels.

    Raises:
        TypeError / ValueError: malformed arguments (ranks, sizes, dtypes, devices, level bookkeeping).
        KernelBuildError: ``backend="compiled"`` and the extension cannot be built or loaded.

    Non-contiguous inputs are accepted: the compiled path copies them to contiguous memory once, here.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    choice = resolve_backend(backend, value.device)
    if choice.extension is None:
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    return MSDeformAttnFunction.apply(
        value.contiguous(),
        spatial_shapes.contiguous(),
        level_start_index.contiguous(),
        sampling_locations.contiguous(),
        attention_weights.contiguous(),
        choice.extension,
    )
