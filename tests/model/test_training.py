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
