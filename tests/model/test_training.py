"""Training path: matched-only masks give the same losses as all-query masks; a few steps reduce the loss."""

from __future__ import annotations

import torch

from seqformer.model import build_criterion, build_model, param_groups
from tests.model.helpers import synthetic_target, tiny_config


def test_matched_only_masks_equal_all_query_masks_then_indexing():
    torch.manual_seed(0)
    cfg = tiny_config(dropout=0.0, dec_layers=2)
    model = build_model(cfg).eval()
    criterion = build_criterion(cfg)
    clips = [torch.randn(2, 3, 64, 96), torch.randn(2, 3, 60, 80)]
    targets = [synthetic_target(2, 2, 64, 96, seed=1), synthetic_target(1, 2, 60, 80, seed=2)]
    with torch.no_grad():
        out = model(clips)
        with_all = criterion(out, targets)  # uses the all-query pred_masks of the eval forward
        del out["pred_masks"]
        lazy = criterion(out, targets)  # computes masks for matched queries from mask_inputs
    assert set(with_all) == set(lazy)
    assert "loss_mask_0" in lazy and "loss_dice_0" in lazy
    for key in with_all:
        torch.testing.assert_close(with_all[key], lazy[key], rtol=1e-6, atol=1e-7)


def test_a_few_adamw_steps_reduce_the_loss_on_one_clip():
    torch.manual_seed(0)
    cfg = tiny_config(dropout=0.0)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    clip = [torch.randn(2, 3, 64, 96)]
    targets = [synthetic_target(2, 2, 64, 96, seed=3)]
    optimizer = torch.optim.AdamW(param_groups(model, 1e-3, 1e-4, 0.1), weight_decay=1e-4)
    history = []
    for _ in range(6):
        losses = criterion(model(clip), targets)
        total = criterion.total_loss(losses)
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        history.append(total.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0]


def test_bfloat16_autocast_training_step_on_cpu_stays_close_to_float32():
    """``train.amp: bf16`` on CPU: one forward, loss and backward under bfloat16 autocast against float32 (same
    weights, same clip, compiled attention kernel): finite, the loss within bfloat16's rounding and the gradient
    pointing the same way."""
    torch.manual_seed(0)
    cfg = tiny_config(dropout=0.0, msda_backend="compiled", backbone="tiny_resnet", dec_layers=2)
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    clip = [torch.randn(2, 3, 64, 96)]
    targets = [synthetic_target(2, 2, 64, 96, seed=3)]

    def loss_and_grad(low: bool) -> tuple[float, torch.Tensor, torch.dtype]:
        model.zero_grad()
        torch.manual_seed(1)  # batch-norm statistics and matching see the same inputs in both passes
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):
            out = model(clip)
            total = criterion.total_loss(criterion(out, targets))
        total.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return float(total.detach()), grads, out["pred_logits"].dtype

    ref_loss, ref_grad, ref_dtype = loss_and_grad(False)
    low_loss, low_grad, low_dtype = loss_and_grad(True)
    assert ref_dtype == torch.float32 and low_dtype == torch.bfloat16  # autocast really ran in bfloat16
    assert torch.isfinite(low_grad).all() and low_grad.dtype == torch.float32  # float32 weights get float32 grads
    assert abs(low_loss - ref_loss) <= 0.02 * ref_loss
    cosine = torch.nn.functional.cosine_similarity(low_grad, ref_grad, dim=0)
    assert cosine > 0.98
    assert abs(low_grad.norm() / ref_grad.norm() - 1) < 0.1
