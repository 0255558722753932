"""Resuming from a checkpoint reproduces step, optimiser state, learning rate and the continued trajectory."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import build_criterion, build_model
from seqformer.platform.checkpoint import load_checkpoint, save_checkpoint
from seqformer.platform.config import ConfigError, validate
from seqformer.platform.train_loop import (
    TrainState,
    budget_milestone_due,
    build_optimizer,
    build_scheduler,
    checkpoint_payload,
    restore,
    seed_everything,
)

TINY = {
    "model": {"backbone": "resnet18", "frozen_batch_norm": False, "freeze_stem": False, "hidden_dim": 32,
              "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 1, "nheads": 4, "num_queries": 6,
              "num_classes": 3, "num_frames": 2, "dropout": 0.0, "msda_backend": "reference"},
    "train": {"lr": 1e-3, "lr_backbone": 1e-3, "lr_drop": [3], "lr_drop_unit": "step", "lr_gamma": 0.5,
              "warmup_steps": 2},
}


def _batch():
    generator = torch.Generator().manual_seed(3)
    clips = [torch.randn(2, 3, 64, 64, generator=generator)]
    masks = torch.zeros(1, 2, 64, 64, dtype=torch.bool)
    masks[:, :, 10:40, 20:50] = True
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([0.55, 0.39, 0.47, 0.47]).repeat(1, 2, 1),
              "masks": masks, "valid": torch.ones(1, 2, dtype=torch.bool)}
    return clips, [target]


def _step(model, criterion, optimizer, scheduler, state):
    clips, targets = _batch()
    losses = criterion(model(clips), targets)
    total = sum(losses[k] * criterion.weight_dict[k] for k in losses if k in criterion.weight_dict)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    scheduler.step()
    state.step += 1
    return float(total.detach())


def _fresh(exp):
    seed_everything(0)
    model = build_model(exp.model).train()
    optimizer = build_optimizer(model, exp)
    return model, build_criterion(exp.model), optimizer, build_scheduler(optimizer, exp), TrainState()


def test_resume_reproduces_state_and_trajectory(tmp_path):
    exp = validate(TINY)
    model, criterion, optimizer, scheduler, state = _fresh(exp)
    for _ in range(3):
        _step(model, criterion, optimizer, scheduler, state)
    save_checkpoint(tmp_path / "ckpt", checkpoint_payload(model, optimizer, scheduler, state, exp))
    expected_lr = [g["lr"] for g in optimizer.param_groups]
    reference = [_step(model, criterion, optimizer, scheduler, state) for _ in range(2)]

    model2, criterion2, optimizer2, scheduler2, state2 = _fresh(exp)
    restore(load_checkpoint(tmp_path / "ckpt"), model2, optimizer2, scheduler2, state2)
    assert state2.step == 3
    assert [g["lr"] for g in optimizer2.param_groups] == expected_lr
    first_param = next(p for p in model2.parameters() if p.requires_grad)
    assert optimizer2.state[first_param]["step"] == 3
    resumed = [_step(model2, criterion2, optimizer2, scheduler2, state2) for _ in range(2)]
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(reference), rtol=1e-5, atol=1e-6)


def test_schedule_warmup_then_step_drop():
    exp = validate(TINY)
    model = build_model(exp.model)
    optimizer = build_optimizer(model, exp)
    scheduler = build_scheduler(optimizer, exp)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.5e-3 and lrs[1] == 1e-3 and lrs[2] == 1e-3 and lrs[3] == 0.5e-3 and lrs[4] == 0.5e-3


def test_official_parameter_groups_learning_rates():
    exp = validate({"model": {**TINY["model"], "backbone": "resnet50", "frozen_batch_norm": True,
                              "freeze_stem": True}})
    optimizer = build_optimizer(build_model(exp.model), exp)
    rates = sorted({g["lr"] for g in optimizer.param_groups})
    assert rates == [2e-5, 2e-4] or rates == [2e-5, 2e-5, 2e-4]
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)


BUDGET = {**TINY, "train": {**TINY["train"], "lr_drop": [50, 80], "lr_drop_unit": "budget", "time_budget_s": 100}}


def test_budget_milestones_come_at_their_share_of_the_time_budget():
    train = validate(BUDGET).train
    assert [budget_milestone_due(train, 0, t) for t in (0.0, 49.9, 50.0, 90.0)] == [False, False, True, True]
    assert [budget_milestone_due(train, 1, t) for t in (50.0, 79.9, 80.0)] == [False, False, True]
    assert not budget_milestone_due(train, 2, 99.0)  # every milestone has come
    assert not budget_milestone_due(validate(TINY).train, 0, 1e9)  # other units never


def test_budget_schedule_drops_from_the_recorded_step_and_resumes_with_it(tmp_path):
    """The loop records the step of each budget milestone in ``TrainState.lr_drop_steps``; the scheduler reads that
    list, so the lr drops from that step on, and a resumed run keeps the drops it had."""
    exp = validate(BUDGET)
    seed_everything(0)
    model = build_model(exp.model).train()
    optimizer = build_optimizer(model, exp)
    state = TrainState()
    scheduler = build_scheduler(optimizer, exp, state.lr_drop_steps)
    criterion = build_criterion(exp.model)
    lrs = []
    for step in range(1, 6):
        lrs.append(optimizer.param_groups[0]["lr"])
        if step == 3:  # the first milestone is due at this step: the loop records it before the scheduler steps
            state.lr_drop_steps.append(state.step + 1)
        _step(model, criterion, optimizer, scheduler, state)
    assert lrs == [0.5e-3, 1e-3, 1e-3, 0.5e-3, 0.5e-3]
    save_checkpoint(tmp_path / "ckpt", checkpoint_payload(model, optimizer, scheduler, state, exp))
    resumed_state = TrainState()
    optimizer2 = build_optimizer(build_model(exp.model), exp)
    scheduler2 = build_scheduler(optimizer2, exp, resumed_state.lr_drop_steps)
    restore(load_checkpoint(tmp_path / "ckpt"), build_model(exp.model), optimizer2, scheduler2, resumed_state)
    assert resumed_state.lr_drop_steps == [3] and resumed_state.step == 5
    optimizer2.step()
    scheduler2.step()
    assert optimizer2.param_groups[0]["lr"] == 0.5e-3  # still dropped after the next step (without the list: 1e-3)
    with pytest.raises(ValueError, match="drop_steps"):
        build_scheduler(optimizer2, exp)


@pytest.mark.parametrize(("train", "message"), [
    ({"lr_drop_unit": "budget", "lr_drop": [80]}, r"train\.time_budget_s is not set"),
    ({"lr_drop_unit": "budget", "lr_drop": [80, 100], "time_budget_s": 60}, r"must be in 1\.\.99, got \[80, 100\]"),
])
def test_budget_unit_config_errors_name_the_keys(train, message):
    with pytest.raises(ConfigError, match=message):
        validate({"train": train})
