"""The memory-lean dropout and the in-place frozen norm compute exactly what the official modules compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqformer.model.backbone import FrozenBatchNorm2d
from seqformer.model.dropout import Dropout, dropout, relu_dropout


def _grads(fn, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(7)
    out = fn(x)
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_equals_f_dropout_for_the_same_seed(dtype, p):
    x = torch.randn(3, 50, 40, dtype=dtype)
    grad_out = torch.randn_like(x)
    ours, ours_grad = _grads(lambda t: dropout(t, p, True), x, grad_out)
    ref, ref_grad = _grads(lambda t: F.dropout(t, p, True), x, grad_out)
    assert (ref == 0).any() and (ref != 0).any()
    assert torch.equal(ours, ref)
    assert torch.equal(ours_grad, ref_grad)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_dropout_equals_relu_then_f_dropout_for_the_same_seed(dtype, inplace):
    x = torch.randn(4, 30, 64, dtype=dtype)
    x[0, 0, :4] = 0.0  # ReLU's kink: zero gradient, as F.relu's
    grad_out = torch.randn_like(x)
    # the in-place variant gets a fresh base tensor, as in the model (a leaf cannot be overwritten)
    ours, ours_grad = _grads(lambda t: relu_dropout(t * 1.0, 0.1, True, inplace=inplace), x, grad_out)
    ref, ref_grad = _grads(lambda t: F.dropout(F.relu(t), 0.1, True), x, grad_out)
    assert torch.equal(ours, ref)
    assert torch.equal(ours_grad, ref_grad)


def test_dropout_is_identity_in_eval_and_at_p0():
    x = torch.randn(5, 6)
    fresh = x.clone()
    assert relu_dropout(fresh, 0.1, False, inplace=True) is fresh and torch.equal(fresh, F.relu(x))
    assert dropout(x, 0.1, False) is x
    assert torch.equal(dropout(x, 0.0, True), x)
    assert torch.equal(relu_dropout(x, 0.1, False), F.relu(x))
    module = Dropout(0.3).eval()
    assert module(x) is x
    assert module.state_dict() == {}


def test_relu_dropout_keeps_one_tensor_for_backward():
    """Autograd holds the output only (F.relu + F.dropout keep the ReLU output and a float noise tensor too)."""
    x = torch.randn(64, 128, requires_grad=True)
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = relu_dropout(x, 0.1, True)
    assert len(packed) == 1 and packed[0].data_ptr() == out.data_ptr()

    packed.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dropout(x, 0.1, True)
    assert [t.dtype for t in packed] == [torch.bool]


def test_inplace_frozen_batch_norm_equals_out_of_place_values_and_grads():
    torch.manual_seed(3)
    norms = [FrozenBatchNorm2d(6), FrozenBatchNorm2d(6, inplace=True)]
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(6) + 0.5
        for n in norms:
            getattr(n, name).copy_(value)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    x = torch.randn(2, 3, 9, 11)
    results = []
    for norm in norms:
        conv.zero_grad()
        out = torch.relu(norm(conv(x)))
        out.backward(torch.ones_like(out))
        results.append((out.detach(), conv.weight.grad.clone()))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def _fast_reference_keep(seed: int, shape: tuple[int, ...], p: float) -> tuple[torch.Tensor, float]:
    """The fast draws rebuilt with integer shifts: lane k of word w is bits 16k..16k+15 (little-endian views)."""
    numel = int(torch.tensor(shape).prod())
    torch.manual_seed(seed)
    words = torch.empty(((numel + 3) // 4,), dtype=torch.int64).random_(-(2**63), None)
    lanes = torch.stack([(words >> (16 * k)) & 0xFFFF for k in range(4)], 1).flatten()[:numel]  # unsigned 0..65535
    signed = torch.where(lanes >= 32768, lanes - 65536, lanes)
    count = round((1 - p) * 65536)
    return (signed + 32768 < count).view(shape), 65536 / count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_draws_lanes_below_the_threshold_and_scales_exactly(dtype, p):
    x = torch.randn(3, 50, 41, dtype=dtype, requires_grad=True)
    torch.manual_seed(11)
    out = dropout(x, p, True, fast=True)
    keep, scale = _fast_reference_keep(11, tuple(x.shape), p)
    expected = x.detach() * keep * torch.tensor(scale, dtype=dtype)
    assert torch.equal(out.detach(), expected)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    assert torch.equal(x.grad, grad_out * keep * torch.tensor(scale, dtype=dtype))


def test_fast_dropout_keeps_the_right_fraction_and_is_unbiased():
    torch.manual_seed(0)
    ones = torch.ones(2_000_000, dtype=torch.float64)
    for p in (0.1, 0.5):
        out = dropout(ones, p, True, fast=True)
        kept = float((out != 0).double().mean())
        sigma = (p * (1 - p) / ones.numel()) ** 0.5
        assert abs(kept - (1 - p)) < 5 * sigma
        assert abs(float(out.mean()) - 1.0) < 5 * sigma / (1 - p)


@pytest.mark.parametrize("inplace", [False, True])
def test_fast_relu_dropout_is_relu_times_the_fast_mask(inplace):
    x = torch.randn(4, 30, 64, dtype=torch.float64)
    torch.manual_seed(5)
    out = relu_dropout(x * 1.0, 0.1, True, inplace=inplace, fast=True)
    keep, scale = _fast_reference_keep(5, tuple(x.shape), 0.1)
    assert torch.equal(out, F.relu(x) * keep * scale)


def test_fast_dropout_switch_reaches_every_transformer_dropout():
    from seqformer.model import build_model
    from tests.model.helpers import tiny_config

    fast = [m.fast for m in build_model(tiny_config(fast_dropout=True)).modules() if isinstance(m, Dropout)]
    plain = [m.fast for m in build_model(tiny_config()).modules() if isinstance(m, Dropout)]
    assert fast and all(fast) and not any(plain)
