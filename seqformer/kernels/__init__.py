"""Multi-scale deformable attention (Deformable-DETR's MSDeformAttn): public op, nn.Module, backends.

Axis letters: N batch, S value length (sum of h_l * w_l), M heads, D channels per head, Lq queries, L levels,
P points per level and head.

Three layers (STYLE.md §8): compiled C++/CUDA kernels (``csrc/``, built lazily by ``_loader``) → the autograd
``MSDeformAttnFunction`` and the pure-PyTorch reference → the ``MSDeformAttn`` module. ``ms_deform_attn`` picks the
backend (``backend.py``); ``python -m seqformer.kernels.build`` prebuilds the extension.
"""

from __future__ import annotations

from seqformer.kernels._loader import KernelBuildError
from seqformer.kernels.backend import Backend, BackendChoice, backend_in_use
from seqformer.kernels.function import MSDeformAttnFunction
from seqformer.kernels.module import MSDeformAttn
from seqformer.kernels.op import ms_deform_attn
from seqformer.kernels.reference import ms_deform_attn_reference

__all__ = [
    "Backend",
    "BackendChoice",
    "KernelBuildError",
    "MSDeformAttn",
    "MSDeformAttnFunction",
    "backend_in_use",
    "ms_deform_attn",
    "ms_deform_attn_reference",
]
