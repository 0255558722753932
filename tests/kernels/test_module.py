"""``MSDeformAttn``: official parameter names and initialisation, 2-d and 4-d reference points, padding mask."""

from __future__ import annotations

import pytest
import torch

from seqformer.kernels import MSDeformAttn

SHAPES = torch.tensor([[6, 8], [3, 4]], dtype=torch.int64)
STARTS = torch.tensor([0, 48], dtype=torch.int64)


def _layer(backend: str = "reference") -> MSDeformAttn:
    return MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3, backend=backend).double()


def _inputs(boxes: bool = False):
    query = torch.randn(2, 5, 32, dtype=torch.float64)
    ref = torch.rand(2, 5, 2, 4 if boxes else 2, dtype=torch.float64)
    flat = torch.randn(2, 60, 32, dtype=torch.float64)
    return query, ref, flat


def test_parameter_names_and_shapes_match_the_official_module() -> None:
    shapes = {k: tuple(v.shape) for k, v in MSDeformAttn(256, 4, 8, 4).state_dict().items()}
    assert shapes == {
        "sampling_offsets.weight": (256, 256),
        "sampling_offsets.bias": (256,),
        "attention_weights.weight": (128, 256),
        "attention_weights.bias": (128,),
        "value_proj.weight": (256, 256),
        "value_proj.bias": (256,),
        "output_proj.weight": (256, 256),
        "output_proj.bias": (256,),
    }


def test_initialisation_puts_points_on_head_directions_with_uniform_weights() -> None:
    layer = MSDeformAttn(d_model=64, n_levels=2, n_heads=8, n_points=3)
    bias = layer.sampling_offsets.bias.view(8, 2, 3, 2)
    assert torch.count_nonzero(layer.sampling_offsets.weight) == 0
    torch.testing.assert_close(bias[0, 0], torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    torch.testing.assert_close(bias[2, 1], torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bias[1, 0, 0], torch.tensor([1.0, 1.0]))  # 45 degrees, scaled to max |coord| = 1
    assert torch.count_nonzero(layer.attention_weights.weight) + torch.count_nonzero(layer.attention_weights.bias) == 0
    assert torch.count_nonzero(layer.value_proj.bias) == 0 and torch.count_nonzero(layer.output_proj.bias) == 0


@pytest.mark.parametrize("boxes", [False, True], ids=["points", "boxes"])
def test_output_shape_and_gradients(boxes: bool) -> None:
    layer = _layer()
    query, ref, flat = _inputs(boxes)
    out = layer(query, ref, flat, SHAPES, STARTS)
    assert out.shape == (2, 5, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


def test_padded_positions_do_not_influence_the_output() -> None:
    layer = _layer()
    query, ref, flat = _inputs()
    mask = torch.zeros(2, 60, dtype=torch.bool)
    mask[:, 40:48] = True
    mask[:, 56:] = True
    changed = flat.clone()
    changed[mask] = 1e3
    torch.testing.assert_close(
        layer(query, ref, flat, SHAPES, STARTS, mask), layer(query, ref, changed, SHAPES, STARTS, mask)
    )


def test_bad_reference_points_and_head_split_raise() -> None:
    query, _, flat = _inputs()
    with pytest.raises(ValueError, match=r"reference_points must be \[N, Lq, L, 2\]"):
        _layer()(query, torch.rand(2, 5, 2, 3, dtype=torch.float64), flat, SHAPES, STARTS)
    with pytest.raises(ValueError, match="d_model \\(30\\) must be divisible by n_heads \\(4\\)"):
        MSDeformAttn(d_model=30, n_heads=4)


@pytest.mark.build
def test_compiled_and_reference_modules_agree() -> None:
    reference = _layer("reference")
    compiled = _layer("compiled")
    compiled.load_state_dict(reference.state_dict())
    query, ref, flat = _inputs(boxes=True)
    torch.testing.assert_close(compiled(query, ref, flat, SHAPES, STARTS), reference(query, ref, flat, SHAPES, STARTS))
