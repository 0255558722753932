"""SeqFormer on an NVIDIA GPU: the compiled CUDA kernel inside the whole model agrees with the CPU model."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import build_criterion, build_model

from .helpers import synthetic_target, tiny_config

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="Requires: [an NVIDIA GPU]"),
]


def _clips(device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [
        torch.randn(2, 3, 64, 96, generator=g).to(device, dtype),
        torch.randn(2, 3, 48, 80, generator=g).to(device, dtype),
    ]


def _targets(device: torch.device) -> list[dict]:
    out = []
    for seed, (h, w) in enumerate(((64, 96), (48, 80))):
        target = synthetic_target(2, 2, h, w, seed=seed)
        out.append({k: v.to(device) for k, v in target.items()})
    return out


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_gpu_forward_and_losses_equal_the_cpu_model_in_float64(backend: str) -> None:
    cfg = tiny_config(msda_backend=backend, backbone="tiny_resnet")
    torch.manual_seed(0)
    cpu_model = build_model(cfg).double().eval()
    gpu_model = build_model(cfg).double().eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model.cuda()
    with torch.no_grad():
        expected = cpu_model(_clips(torch.device("cpu"), torch.float64))
        got = gpu_model(_clips(torch.device("cuda"), torch.float64))
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        # float64 throughout, but a few float32 steps inside the model round differently on the two devices (~1e-8)
        torch.testing.assert_close(got[key].cpu(), expected[key], rtol=1e-6, atol=1e-6)

    criterion = build_criterion(cfg)
    losses_cpu = criterion(expected, _targets(torch.device("cpu")))
    losses_gpu = criterion(got, _targets(torch.device("cuda")))
    for key, value in losses_cpu.items():
        torch.testing.assert_close(losses_gpu[key].cpu(), value, rtol=1e-6, atol=1e-8, msg=key)


def test_gpu_training_steps_reduce_the_loss_and_bf16_autocast_runs() -> None:
    cfg = tiny_config(msda_backend="compiled", backbone="tiny_resnet")
    torch.manual_seed(0)
    model = build_model(cfg).cuda().train()
    criterion = build_criterion(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    clips, targets = _clips(torch.device("cuda"), torch.float32), _targets(torch.device("cuda"))

    def total() -> torch.Tensor:
        return criterion.total_loss(criterion(model(clips), targets))

    first = None
    for _ in range(40):
        loss = total()
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(total()) < 0.85 * first

    model.eval()
    with torch.no_grad():
        full = model(clips)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(clips)
    assert torch.isfinite(half["pred_logits"].float()).all()
    torch.testing.assert_close(half["pred_boxes"].float(), full["pred_boxes"], rtol=0.05, atol=0.05)
