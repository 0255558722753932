"""Dropout that keeps a bool mask instead of a float noise tensor, and a fused ReLU + dropout for the FFNs.

On CPU ``F.dropout`` draws ``noise = bernoulli(1 - p) / (1 - p)`` as a float tensor the size of its input and
autograd keeps that noise for the backward; before a linear layer the ReLU output is kept too. For the R50
encoder FFN (``[5, 5100, 1024]`` per layer) that is two extra 104 MB tensors per layer. Here the same Bernoulli
draws are taken into a bool tensor (``bernoulli_`` fills an integer buffer from the generator and converts it, so
a bool and a float target receive the same 0/1 pattern for the same generator state) and the products are formed
as ``x * keep * scale``, which rounds exactly like ``x * noise``. Forward values and gradients equal
``F.dropout``'s for the same seed up to the sign of zeros in dropped positions (see ``tests/model/test_dropout.py``).

``fast=True`` (``ModelConfig.fast_dropout``, for CPU training) draws the masks differently: ``bernoulli_`` costs
about 11 ns per element on this project's 2-core CPU (13% of an R50 training step), while 64-bit words from the
same generator (``random_`` over the full range) cost about 1 ns per 16-bit lane. Each element takes one 16-bit
lane and is kept when the lane is below ``round((1 - p) * 65536)`` of its 65,536 values; the kept values are
scaled by ``65536 / that count``, so the expectation is exact and the keep probability is within 2^-17 of
``1 - p``. Deterministic for a seeded generator, but not ``F.dropout``'s draws.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=64)
def _keep_scale(p: float, dtype: torch.dtype) -> float:
    # the value F.dropout's noise holds where it keeps: 1 / (1 - p) rounded in ``dtype`` as ``ones.div_(1 - p)``
    return float(torch.ones((), dtype=dtype).div_(1 - p))


def _keep_mask(x: torch.Tensor, p: float, fast: bool) -> tuple[torch.Tensor, float]:
    """Bool keep mask shaped like ``x`` and the scale of the kept values (see the module docstring)."""
    if not fast:
        return torch.empty(x.shape, dtype=torch.bool, device=x.device).bernoulli_(1 - p), _keep_scale(p, x.dtype)
    count = min(65536, max(1, round((1 - p) * 65536)))
    numel = x.numel()
    words = torch.empty(((numel + 3) // 4,), dtype=torch.int64, device=x.device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:numel].view(x.shape)
    keep = lanes <= count - 32769  # int16 lanes: values -32768 .. count - 32769 are `count` of the 65,536
    return keep, float(torch.tensor(65536 / count, dtype=x.dtype))


class _MaskedDropout(torch.autograd.Function):
    """``x * keep * scale``; saves the bool mask (1 byte per element) for the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, fast: bool) -> torch.Tensor:
        keep, scale = _keep_mask(x, p, fast)
        ctx.scale = scale
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


class _ReLUDropout(torch.autograd.Function):
    """``relu(x) * keep * scale``; saves only its output (which the following linear layer keeps anyway).

    The output is positive exactly where the input was positive and kept (``scale > 1``), so the backward
    ``grad * scale`` on positive outputs, zero elsewhere, is the ReLU-then-dropout gradient (up to the sign of
    zeros in dropped positions).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, inplace: bool, fast: bool) -> torch.Tensor:
        keep, scale = _keep_mask(x, p, fast)
        if inplace:
            ctx.mark_dirty(x)
            out = x.relu_()
        else:
            out = F.relu(x)
        out = out.mul_(keep).mul_(scale)
        ctx.scale = scale
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (out,) = ctx.saved_tensors
        # ReLU's own backward kernel (zero where out <= 0) in one pass, then the dropout scale in place
        return torch.ops.aten.threshold_backward(grad, out, 0.0).mul_(ctx.scale), None, None, None


def dropout(x: torch.Tensor, p: float, training: bool, *, fast: bool = False) -> torch.Tensor:
    """``F.dropout(x, p, training)`` (same draws, same values) keeping a bool mask for the backward.

    Args:
        x: any float tensor.
        p: drop probability.
        training: apply dropout (else identity, as ``F.dropout``).
        fast: draw the mask from 16-bit lanes of 64-bit generator words (see the module docstring).
    """
    if not training or p == 0 or x.numel() == 0 or p >= 1:
        return F.dropout(x, p, training)
    return _MaskedDropout.apply(x, p, fast)


def relu_dropout(
    x: torch.Tensor, p: float, training: bool, *, inplace: bool = False, fast: bool = False
) -> torch.Tensor:
    """``F.dropout(F.relu(x), p, training)`` (same draws, same values) keeping only the output for the backward.

    Args:
        x: any float tensor; with ``inplace`` it may be overwritten with the result (pass a fresh intermediate
            such as a linear layer's output).
        p: drop probability.
        training: apply dropout (else only the ReLU).
        inplace: reuse ``x``'s memory. With autograd ``x`` must not be a view: an in-place change of a view makes
            autograd copy the whole base tensor in the backward (``CopySlices``), which costs more than it saves;
            a linear layer's output on a 3-d input is such a view, on a 2-d input it is not.
        fast: draw the mask from 16-bit lanes of 64-bit generator words (see the module docstring).
    """
    if not training or p == 0 or x.numel() == 0 or p >= 1:
        return F.dropout(F.relu(x, inplace=inplace), p, training)
    return _ReLUDropout.apply(x, p, inplace, fast)


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same name, no state) computed by :func:`dropout`; ``fast`` picks the mask draws."""

    fast: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a tensor of any shape."""
        return dropout(x, self.p, self.training, fast=self.fast)
