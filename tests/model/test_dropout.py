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
