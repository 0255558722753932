"""The op battery, written once (``OpTester``) and run for each backend: reference, compiled CPU, compiled CUDA.

Every backend is compared with ``oracle`` (the pure-PyTorch reference, the source of truth; the reference itself
is compared with an independent gather-based implementation), in float64 at ``torch.allclose``'s default tolerance.
"""

from __future__ import annotations

import re

import pytest
import torch

from seqformer.kernels import KernelBuildError, ms_deform_attn, ms_deform_attn_reference
from seqformer.kernels._loader import load_extension
from tests.kernels.helpers import Case, gather_oracle, make_inputs

# Odd and even channels per head (30 and 71 take the generic loop, 32 and 64 the unrolled ones), 1-4 levels,
# 1-8 points, 1 to thousands of queries, batch 1-3, some levels a single pixel wide.
CASES = [
    Case(batch=1, heads=1, channels=30, queries=1, levels=((5, 7),), points=1),
    Case(batch=2, heads=2, channels=32, queries=7, levels=((6, 4), (3, 2)), points=3),
    Case(batch=3, heads=3, channels=64, queries=50, levels=((9, 11), (5, 6), (1, 3)), points=8),
    Case(batch=2, heads=4, channels=71, queries=1200, levels=((20, 24), (10, 12), (5, 6), (3, 3)), points=4),
    Case(batch=1, heads=8, channels=32, queries=1500, levels=((45, 80), (23, 40), (12, 20), (6, 10)), points=4),
]
SWEEP_CHANNELS = [30, 32, 64, 71, pytest.param(1025, marks=pytest.mark.slow)]
TINY = Case(batch=2, heads=2, channels=3, queries=3, levels=((3, 4), (2, 2)), points=2)
# float32: each output sums 4*L*P products of O(1) numbers in a different order than grid_sample, so errors are a
# few ulp of the result. Location gradients are dot products over D channels (up to 71 here) multiplied by w_l or
# h_l (up to 24), so their float32 rounding reaches ~1e-4 absolute; the reference itself is that far from float64.
F32_OUT = {"rtol": 1e-5, "atol": 1e-5}
F32_GRAD = {"rtol": 1e-4, "atol": 5e-4}


def _grads(fn, inputs: tuple[torch.Tensor, ...], grad_out: torch.Tensor) -> list[torch.Tensor]:
    value, shapes, starts, locations, weights = (t.detach().clone() for t in inputs)
    for t in (value, locations, weights):
        t.requires_grad_(True)
    fn(value, shapes, starts, locations, weights).backward(grad_out)
    return [value.grad, locations.grad, weights.grad]


class OpTester:
    """The battery; subclasses set ``backend`` and ``device`` (and may replace ``oracle``)."""

    backend: str
    device: str = "cpu"
    oracle = staticmethod(ms_deform_attn_reference)

    def op(self, *inputs: torch.Tensor) -> torch.Tensor:
        return ms_deform_attn(*inputs, backend=self.backend)

    def inputs(self, case: Case, dtype: torch.dtype = torch.float64, **kwargs) -> tuple[torch.Tensor, ...]:
        return make_inputs(case, dtype=dtype, device=self.device, **kwargs)

    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
    def test_forward_and_backward_match_oracle_in_float64(self, case: Case) -> None:
        inputs = self.inputs(case)
        out = self.op(*inputs)
        assert out.shape == (case.batch, case.queries, case.heads * case.channels) and out.dtype == torch.float64
        torch.testing.assert_close(out, self.oracle(*inputs), rtol=1e-5, atol=1e-8)
        grad_out = torch.randn_like(out)
        for got, want in zip(_grads(self.op, inputs, grad_out), _grads(self.oracle, inputs, grad_out)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)

    @pytest.mark.parametrize("case", CASES[1:4], ids=lambda c: c.id)
    def test_float32_matches_float64_oracle_within_stated_tolerance(self, case: Case) -> None:
        inputs64 = self.inputs(case)
        inputs32 = tuple(t.float() if t.is_floating_point() else t for t in inputs64)
        out = self.op(*inputs32)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), self.oracle(*inputs64), **F32_OUT)
        grad_out = torch.randn_like(out)
        got = _grads(self.op, inputs32, grad_out)
        want = _grads(self.oracle, inputs64, grad_out.double())
        for g, w in zip(got, want):
            assert g.dtype == torch.float32
            torch.testing.assert_close(g.double(), w, **F32_GRAD)

    @pytest.mark.parametrize("channels", SWEEP_CHANNELS)
    def test_channel_sweep(self, channels: int) -> None:
        case = Case(batch=2, heads=2, channels=channels, queries=33, levels=((7, 9), (4, 5)), points=3)
        inputs = self.inputs(case)
        torch.testing.assert_close(self.op(*inputs), self.oracle(*inputs), rtol=1e-5, atol=1e-8)

    def test_gradcheck_value_locations_and_weights(self) -> None:
        value, shapes, starts, locations, weights = self.inputs(TINY, margin=0.2)
        value.requires_grad_(True)
        locations.requires_grad_(True)
        weights.requires_grad_(True)
        assert torch.autograd.gradcheck(
            lambda v, loc, a: self.op(v, shapes, starts, loc, a), (value, locations, weights), eps=1e-6, atol=1e-5
        )

    def test_non_contiguous_inputs_give_the_contiguous_result(self) -> None:
        case = CASES[2]
        inputs = self.inputs(case)
        value, shapes, starts, locations, weights = inputs
        # the same numbers behind strided views: a channel-interleaved value, a transposed location tensor
        value_nc = torch.stack([value, torch.zeros_like(value)], dim=-1)[..., 0]
        locations_nc = locations.transpose(1, 2).contiguous().transpose(1, 2)
        weights_nc = torch.stack([weights, -weights], dim=-1)[..., 0]
        assert not (value_nc.is_contiguous() or locations_nc.is_contiguous() or weights_nc.is_contiguous())
        expected = self.op(*inputs)
        got = self.op(value_nc, shapes, starts, locations_nc, weights_nc)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        grad_out = torch.randn_like(expected)
        for g, w in zip(
            _grads(self.op, (value_nc, shapes, starts, locations_nc, weights_nc), grad_out),
            _grads(self.op, inputs, grad_out),
        ):
            # the CUDA backward scatters into grad_value with atomics: summation order, hence the last bits, vary
            exact = self.device == "cpu"
            torch.testing.assert_close(g, w, rtol=0 if exact else 1e-12, atol=0 if exact else 1e-14)

    # 5 channels take the generic channel loop, 32 the unrolled one (each reads the zero rows its own way)
    @pytest.mark.parametrize("channels", [5, 32])
    def test_locations_outside_the_map_contribute_zero(self, channels: int) -> None:
        case = Case(batch=1, heads=2, channels=channels, queries=6, levels=((4, 5), (2, 3)), points=2)
        value, shapes, starts, locations, weights = self.inputs(case)
        # far outside, just outside (all four corners out), and the half-pixel border where one row is still in
        edges = torch.tensor([-2.0, 3.0, -0.11, 1.11, -0.05, 1.05], dtype=locations.dtype, device=locations.device)
        locations = edges[torch.randint(0, 6, locations.shape)].to(locations.device)
        out = self.op(value, shapes, starts, locations, weights)
        torch.testing.assert_close(out, self.oracle(value, shapes, starts, locations, weights), rtol=1e-5, atol=1e-8)
        far = torch.full_like(locations, 5.0)
        assert torch.count_nonzero(self.op(value, shapes, starts, far, weights)) == 0
        grads = _grads(self.op, (value, shapes, starts, far, weights), torch.ones_like(out))
        assert all(torch.count_nonzero(g) == 0 for g in grads)

    def test_mixed_precision_inputs_follow_value_dtype(self) -> None:
        value, shapes, starts, locations, weights = self.inputs(CASES[1])
        out = self.op(value, shapes, starts, locations.float(), weights.float())
        assert out.dtype == torch.float64
        expected = self.oracle(value, shapes, starts, locations.float().double(), weights.float().double())
        torch.testing.assert_close(out, expected)
        grads = _grads(self.op, (value, shapes, starts, locations.float(), weights.float()), torch.ones_like(out))
        assert [g.dtype for g in grads] == [torch.float64, torch.float32, torch.float32]

    def test_no_queries_gives_empty_output(self) -> None:
        case = Case(batch=2, heads=2, channels=4, queries=0, levels=((3, 3),), points=2)
        out = self.op(*self.inputs(case))
        assert out.shape == (2, 0, 8)

    @pytest.mark.parametrize(
        ("mutate", "error", "message"),
        [
            (lambda a: (a[0][0],) + a[1:], ValueError, "value must be 4-D"),
            (lambda a: (a[0].long(),) + a[1:], TypeError, "value must be float64"),
            (lambda a: a[:1] + (a[1].int(),) + a[2:], TypeError, "spatial_shapes must be int64"),
            (lambda a: a[:2] + (a[2].float(),) + a[3:], TypeError, "level_start_index must be int64"),
            (lambda a: a[:3] + (a[3][..., :1],) + a[4:], ValueError, "sampling_locations must be 6-D"),
            (lambda a: a[:3] + (a[3][:1],) + a[4:], ValueError, "N=2 and M=2"),
            (lambda a: a[:4] + (a[4][..., :1],), ValueError, "attention_weights must have shape"),
            (lambda a: a[:4] + (a[4].long(),), TypeError, "attention_weights must be a floating-point"),
            (lambda a: a[:1] + (a[1][:1],) + a[2:], ValueError, "spatial_shapes must have shape"),
            (lambda a: a[:2] + (a[2][:1],) + a[3:], ValueError, "level_start_index must have shape"),
            (lambda a: a[:1] + (a[1] + 1,) + a[2:], ValueError, re.escape("level_start_index[1] = 24, expected 35")),
            (lambda a: a[:2] + (a[2] + 1,) + a[3:], ValueError, re.escape("level_start_index[0] = 1, expected 0")),
            (lambda a: (a[0][:, :-1],) + a[1:], ValueError, "value has S=29 rows but spatial_shapes"),
            (lambda a: a[:1] + (a[1] * 0,) + a[2:], ValueError, "must be positive"),
            (lambda a: (a[0].tolist(),) + a[1:], TypeError, "value must be a torch.Tensor, got list"),
            (lambda a: a[:3] + (a[3].to("meta"),) + a[4:], ValueError, "sampling_locations is on meta"),
        ],
    )
    def test_bad_calls_raise_with_message(self, mutate, error, message) -> None:
        inputs = self.inputs(CASES[1])
        with pytest.raises(error, match=message):
            self.op(*mutate(inputs))

    def test_unknown_backend_raises(self) -> None:
        with pytest.raises(ValueError, match="backend must be one of"):
            ms_deform_attn(*self.inputs(TINY), backend="fast")


class TestReferenceBackend(OpTester):
    backend = "reference"
    oracle = staticmethod(gather_oracle)


@pytest.mark.build
class TestCompiledCPU(OpTester):
    backend = "compiled"

    def test_bfloat16_forward_and_backward(self) -> None:
        inputs = self.inputs(CASES[2])
        inputs16 = tuple(t.bfloat16() if t.is_floating_point() else t for t in inputs)
        out = self.op(*inputs16)
        assert out.dtype == torch.bfloat16
        # accumulation is float32; the error is bfloat16's rounding of the inputs (8 bits) and of the result
        expected = self.oracle(*(t.double() if t.is_floating_point() else t for t in inputs16))
        torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
        grads = _grads(self.op, inputs16, torch.ones_like(out))
        assert [g.dtype for g in grads] == [torch.bfloat16] * 3 and all(torch.isfinite(g.float()).all() for g in grads)

    @pytest.mark.parametrize(
        ("index", "mutate", "message"),
        [
            (0, lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), "value must be contiguous"),
            (3, lambda t: t.float(), "sampling_locations must have the value's dtype Double, got Float"),
            (4, lambda t: t[..., :1].contiguous(), re.escape("attention_weights must have shape [2, 7, 2, 2, 3], got")),
            (1, lambda t: t.int(), "spatial_shapes must be int64"),
            (1, lambda t: t * 5, "does not fit in value of length S=30"),
        ],
    )
    def test_binding_checks_name_the_argument(self, index, mutate, message) -> None:
        extension = load_extension(with_cuda=False)
        inputs = list(self.inputs(CASES[1]))
        inputs[index] = mutate(inputs[index])
        with pytest.raises(RuntimeError, match=message):
            extension.forward(*inputs)

    def test_more_threads_than_heads_splits_queries_without_changing_results(self) -> None:
        case = Case(batch=1, heads=1, channels=32, queries=300, levels=((9, 10), (4, 5)), points=4)
        inputs = self.inputs(case)
        grad_out = torch.randn(1, 300, 32, dtype=torch.float64)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            single = _grads(self.op, inputs, grad_out)
            torch.set_num_threads(4)
            split = _grads(self.op, inputs, grad_out)
        finally:
            torch.set_num_threads(threads)
        for a, b in zip(single, split):
            torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="Requires: [an NVIDIA GPU]")
class TestCompiledCUDA(OpTester):
    backend = "compiled"
    device = "cuda"

    def oracle(self, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return ms_deform_attn_reference(*(t.cpu() for t in inputs)).to(inputs[0].device)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision_forward_and_backward(self, dtype: torch.dtype) -> None:
        inputs = self.inputs(CASES[3])
        low = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
        out = self.op(*low)
        assert out.dtype == dtype
        expected = self.oracle(*(t.double() if t.is_floating_point() else t for t in low))
        torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
        grads = _grads(self.op, low, torch.ones_like(out))
        assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)


def test_compiled_error_type_is_a_runtime_error() -> None:
    assert issubclass(KernelBuildError, RuntimeError)
