"""The performance rewrites compute what the official formulations compute (exactly, or to float32 rounding)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import seqformer.model.ms_deform_attn as msda_module
from seqformer.model import build_criterion, build_model
from seqformer.model.backbone import ResNetBackbone
from seqformer.model.ms_deform_attn import MSDeformAttn
from tests.model.helpers import synthetic_target, tiny_config


@pytest.mark.parametrize("refs_need_grad", [False, True])
@pytest.mark.parametrize("repeat", [1, 3])
def test_sampling_locations_equal_the_official_broadcast_formula(monkeypatch, repeat, refs_need_grad):
    """``ref + offsets / (w, h)`` formed over contiguous rows gives the official values and gradients bit for bit."""
    torch.manual_seed(0)
    attn = MSDeformAttn(32, n_levels=3, n_heads=4, n_points=2, backend="reference")
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.3)
    shapes = torch.tensor([[6, 9], [3, 5], [2, 3]])
    start = torch.tensor([0, 54, 69])
    n, lq = 2, 7
    query = torch.randn(n, lq, 32)
    refs = torch.rand(n * repeat, lq, 3, 2, requires_grad=refs_need_grad)
    value = torch.randn(n * repeat, 75, 4, 8)
    captured = {}

    def capture(value, spatial_shapes, level_start_index, locations, weights, backend):  # noqa: ANN001, ANN202
        captured["locations"] = locations
        return value.new_zeros(value.shape[0], locations.shape[1], 32)

    monkeypatch.setattr(msda_module, "ms_deform_attn", capture)
    attn.sample(query, refs, value, shapes, start, repeat=repeat)
    ours = captured["locations"]
    grad = torch.randn_like(ours)
    inputs = [refs, attn.sampling_offsets.weight] if refs_need_grad else [attn.sampling_offsets.weight]
    ours_grads = torch.autograd.grad(ours, inputs, grad)

    offsets = attn.sampling_offsets(query).view(n, lq, 4, 3, 2, 2).repeat_interleave(repeat, dim=0)
    normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], -1)
    official = refs[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    official_grads = torch.autograd.grad(official, inputs, grad)
    assert ours.is_contiguous()
    assert torch.equal(ours, official)
    for a, b in zip(ours_grads, official_grads):
        assert torch.equal(a, b)


def _backbone_pair(dtype: torch.dtype) -> tuple[ResNetBackbone, ResNetBackbone]:
    nchw = ResNetBackbone("resnet18", train_backbone=True, dilation=False, channels_last=False).to(dtype)
    nhwc = ResNetBackbone("resnet18", train_backbone=True, dilation=False, channels_last=True).to(dtype)
    nhwc.load_state_dict(nchw.state_dict())
    for m in nchw.modules():  # non-trivial frozen statistics
        if hasattr(m, "running_var"):
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.normal_(0, 0.1)
    nhwc.load_state_dict(nchw.state_dict())
    return nchw, nhwc


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_channels_last_backbone_equals_nchw_to_rounding(dtype):
    torch.manual_seed(0)
    nchw, nhwc = _backbone_pair(dtype)
    assert nhwc.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 32, 64, dtype=dtype)
    ours, ref = nhwc(images), nchw(images)
    # float64: both are exact to ~1e-15; float32: a different summation order, rounding-level differences
    rtol, atol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-4, 1e-4)
    for a, b in zip(ours, ref):
        assert a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * b.abs().max().item())
    sum(o.square().mean() for o in ours).backward()
    sum(o.square().mean() for o in ref).backward()
    for (name, a), b in zip(nhwc.named_parameters(), nchw.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=atol * b.grad.abs().max().item(), msg=name)


def test_model_losses_and_gradients_do_not_depend_on_the_backbone_layout():
    """Train step in float64 with dropout on: NHWC backbone vs NCHW backbone, same seed -> same losses and grads."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    cfg = tiny_config(backbone="resnet18", dec_layers=2, dropout=0.1)
    models = [build_model(cfg).train(), build_model(cfg).train()]
    models[1].load_state_dict(models[0].state_dict())
    body = models[0].detr.backbone[0]
    body.memory_format = torch.contiguous_format
    body.body.to(memory_format=torch.contiguous_format)
    criterion = build_criterion(cfg)
    clip = [torch.randn(2, 3, 64, 64)]
    targets = [synthetic_target(2, 2, 64, 64, seed=5)]
    results = []
    for model in models:
        torch.manual_seed(11)
        losses = criterion(model(clip), targets)
        criterion.total_loss(losses).backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grad_a), (loss_b, grad_b) = results
    for key in loss_a:
        torch.testing.assert_close(loss_a[key], loss_b[key], rtol=1e-9, atol=1e-12)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-7, atol=1e-10, msg=name)


def _folded_pair(name: str, dtype: torch.dtype) -> tuple[ResNetBackbone, ResNetBackbone]:
    """Two copies of a frozen-norm backbone with non-trivial statistics: norms folded (default) and module by module."""
    folded = ResNetBackbone(name, train_backbone=True, dilation=False).to(dtype)
    for m in folded.modules():
        if hasattr(m, "running_var"):
            m.running_var.uniform_(0.5, 1.5)
            m.running_mean.normal_(0, 0.1)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
    plain = ResNetBackbone(name, train_backbone=True, dilation=False).to(dtype)
    plain.load_state_dict(folded.state_dict())
    plain.fold_frozen_norms = False
    assert folded.fold_frozen_norms
    return folded, plain


@pytest.mark.parametrize("name", ["tiny_resnet", "resnet50"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("grad", [False, True])
def test_folded_frozen_norms_equal_the_modules(name, dtype, grad):
    """Inference (float32: oneDNN conv + sum + ReLU) and training (autograd through the scaled weight): same
    features and parameter gradients as conv -> FrozenBatchNorm2d -> (+ identity) -> ReLU module by module."""
    torch.manual_seed(0)
    folded, plain = _folded_pair(name, dtype)
    images = torch.randn(2, 3, 64, 96, dtype=dtype)
    rtol, atol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-4, 1e-5)
    with torch.set_grad_enabled(grad):
        ours, ref = folded(images), plain(images)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol * b.abs().max().item())
    if not grad:
        return
    sum(o.square().mean() for o in ours).backward()
    sum(o.square().mean() for o in ref).backward()
    checked = 0
    for (pname, a), b in zip(folded.named_parameters(), plain.parameters()):
        assert (a.grad is None) == (b.grad is None), pname
        if a.grad is not None:
            checked += 1
            torch.testing.assert_close(a.grad, b.grad, rtol=rtol, atol=atol * b.grad.abs().max().item(), msg=pname)
    assert checked > 0  # layer2-4 train, the stem and layer1 are frozen


def test_folded_frozen_norms_under_bfloat16_autocast_take_the_autocast_path():
    torch.manual_seed(0)
    folded, plain = _folded_pair("tiny_resnet", torch.float32)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = folded(images), plain(images)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), rtol=0.05, atol=0.05 * b.float().abs().max().item())


def test_checkpointed_encoder_gives_the_same_losses_and_gradients():
    """checkpoint_encoder recomputes the encoder layers in the backward with the dropout draws replayed."""
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        cfg = tiny_config(backbone="tiny_resnet", enc_layers=2, dec_layers=2, dropout=0.1)
        plain = build_model(cfg).train()
        ckpt = build_model(dataclasses.replace(cfg, checkpoint_encoder=True)).train()
        ckpt.load_state_dict(plain.state_dict())
        assert ckpt.detr.transformer.encoder.checkpoint and not plain.detr.transformer.encoder.checkpoint
        criterion = build_criterion(cfg)
        clip = [torch.randn(2, 3, 64, 64)]
        targets = [synthetic_target(2, 2, 64, 64, seed=5)]
        results = []
        for model in (plain, ckpt):
            torch.manual_seed(11)
            losses = criterion(model(clip), targets)
            criterion.total_loss(losses).backward()
            results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    finally:
        torch.set_default_dtype(torch.float32)
    (loss_a, grad_a), (loss_b, grad_b) = results
    for key in loss_a:
        assert torch.equal(loss_a[key], loss_b[key]), key
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        torch.testing.assert_close(grad_a[name], grad_b[name], rtol=1e-12, atol=1e-14, msg=name)
