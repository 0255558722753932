"""The per-worker training loop run by Ray Train's ``TorchTrainer`` (one process per worker).

It builds the model, optimiser and scheduler, resumes from the latest checkpoint, trains on this worker's shard of the
clip records, logs smoothed losses with ETA every few seconds, validates on rank 0, and reports metrics and
checkpoints through ``ray.train.report``. MLflow is written from rank 0 only, into the run the driver created.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from seqformer.model import build_criterion, build_model, param_groups
from seqformer.platform.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seqformer.platform.config import ExperimentConfig, to_dict, validate
from seqformer.platform.log import format_seconds, setup_logging
from seqformer.platform.tracking import redact_tree

logger = logging.getLogger(__name__)

_LAYER_COPY = re.compile(r"_(\d+|enc|g\d+)$")
"""Suffix of a loss's copy for an earlier decoder layer (``loss_ce_0``), the unused encoder head or a further
training query group (``loss_ce_g1``, ``loss_ce_0_g1``)."""


class SmoothedValue:
    """Median and mean over a window of recent values (DETR's MetricLogger)."""

    def __init__(self, window: int = 20) -> None:
        self.values: deque[float] = deque(maxlen=window)

    def update(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.values else float("nan")


def build_optimizer(model: torch.nn.Module, exp: ExperimentConfig) -> torch.optim.Optimizer:
    """AdamW with the official parameter groups (backbone and linear-projection learning rates)."""
    groups = param_groups(
        model, lr=exp.train.lr, lr_backbone=exp.train.lr_backbone, lr_linear_proj_mult=exp.train.lr_linear_proj_mult
    )
    # fused: one kernel per step for all parameters instead of ~10 small ops per tensor (same update rule); CPU and
    # CUDA both have it. The official model has ~300 parameter tensors, the demo's ~200: the per-tensor loop cost
    # about a tenth of a demo step.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=exp.train.lr, weight_decay=exp.train.weight_decay, fused=fused or None)


def build_scheduler(
    optimizer: torch.optim.Optimizer, exp: ExperimentConfig, drop_steps: list[int] | None = None
) -> torch.optim.lr_scheduler.LRScheduler:
    """MultiStepLR at ``train.lr_drop`` (epochs officially, or steps), with an optional linear warm-up.

    ``lr_drop_unit: budget``: the milestones are shares of the time budget, and ``drop_steps`` (a list the training
    loop appends the step of each drop to, :attr:`TrainState.lr_drop_steps`) holds the steps at which they came.
    """
    milestones = list(exp.train.lr_drop)
    gamma = exp.train.lr_gamma
    warmup = exp.train.warmup_steps
    unit = exp.train.lr_drop_unit
    unit_is_step = unit in ("step", "budget")
    if unit == "budget" and drop_steps is None:
        raise ValueError("build_scheduler: train.lr_drop_unit 'budget' needs the drop_steps list the loop fills")

    def factor(count: int) -> float:
        # count = epochs done (epoch unit) or steps done (step and budget units); warm-up counts steps (below).
        passed = drop_steps if unit == "budget" else milestones
        drops = sum(1 for m in passed if count >= m)
        return gamma**drops

    if unit_is_step and warmup:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * factor(step))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def budget_milestone_due(train: Any, drops_done: int, elapsed: float) -> bool:
    """``lr_drop_unit: budget``: whether milestone number ``drops_done`` (``train.lr_drop`` in percent of
    ``train.time_budget_s``) has come after ``elapsed`` training seconds; False once every milestone has."""
    if train.lr_drop_unit != "budget" or drops_done >= len(train.lr_drop):
        return False
    return elapsed >= train.lr_drop[drops_done] / 100.0 * float(train.time_budget_s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
        "python_seed": torch.tensor([random.getrandbits(62)], dtype=torch.int64),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, 624, 0, 0.0))
    random.seed(int(state["python_seed"].item()))


class TrainState:
    """Counters that checkpoints carry."""

    def __init__(self) -> None:
        self.step = 0
        self.epoch = 0
        self.best_metric: float | None = None
        self.last_val: dict[str, float] = {}
        self.train_seconds = 0.0
        self.lr_drop_steps: list[int] = []
        """Steps at which the budget milestones (``lr_drop_unit: budget``) came; the scheduler reads this list."""


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def checkpoint_payload(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    exp: ExperimentConfig,
) -> dict[str, Any]:
    core = _unwrap(model)
    return {
        "model": core.state_dict(),
        "model_config": exp.model.to_dict(),
        "experiment": redact_tree(to_dict(exp)),  # the checkpoint becomes an MLflow artifact: no passwords in URIs
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "step": state.step,
        "epoch": state.epoch,
        "train_seconds": state.train_seconds,
        "lr_drop_steps": list(state.lr_drop_steps),
        "best_metric": state.best_metric if state.best_metric is not None else float("nan"),
        "last_val": dict(state.last_val),
        "rng": rng_state(),
    }


def restore(
    payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState
) -> None:
    _unwrap(model).load_state_dict(payload["model"], strict=True)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["lr_scheduler"])
    state.step = int(payload["step"])
    state.epoch = int(payload["epoch"])
    state.train_seconds = float(payload.get("train_seconds", 0.0))
    state.lr_drop_steps[:] = [int(s) for s in payload.get("lr_drop_steps", [])]  # in place: the scheduler reads it
    best = payload.get("best_metric")
    state.best_metric = None if best is None or (isinstance(best, float) and math.isnan(best)) else float(best)
    state.last_val = dict(payload.get("last_val", {}))
    if "rng" in payload:
        restore_rng(payload["rng"])


def init_from_checkpoint(model: torch.nn.Module, exp: ExperimentConfig) -> None:
    """Initialise weights from ``train.init_checkpoint`` (official or ours), dropping class heads when asked."""
    from seqformer.platform.model_source import resolve_checkpoint_payload

    payload = resolve_checkpoint_payload(exp.train.init_checkpoint)
    drop = exp.train.drop_class_head
    # official pre-training init: class heads removed, the rest loaded with strict=False (mismatches are logged)
    result = _unwrap(model).load_official_state_dict(payload, strict=not drop, drop_class_head=drop)
    logger.info("initialised from %s (%s)", exp.train.init_checkpoint, result)


def _peak_memory_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _any_rank(flag: bool, world: int) -> bool:
    """True when ``flag`` is true on any rank (one small all-reduce; every rank must call it)."""
    if world == 1 or not dist.is_initialized():
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def _resume_payload(exp: ExperimentConfig) -> dict[str, Any] | None:
    """The checkpoint to resume from: Ray Train's latest (after a worker failure, or restored from the snapshot in
    ``storage_path/<name>/`` when a job of the same experiment is run again), or a newer verified one in storage.

    Ray Train registers a reported checkpoint only when its controller next polls the worker (every ~2 s): a worker
    or job killed in between leaves a complete, newer checkpoint under ``storage_path/<name>/`` that
    ``get_checkpoint()`` does not return. The newest checkpoint in storage that passes its checksum is used when it
    is ahead of Ray's, or when Ray's fails its checksum.
    """
    import ray.train

    from seqformer.platform.driver import latest_good_checkpoint

    checkpoint = ray.train.get_checkpoint()
    payload = None
    if checkpoint is not None:
        try:
            with checkpoint.as_directory() as folder:
                payload = load_checkpoint(folder)
        except CheckpointError as err:
            logger.warning("checkpoint %s from Ray Train is unusable (%s); using the newest good one", checkpoint.path,
                           err)
    stored = latest_good_checkpoint(exp)
    if stored is not None and (checkpoint is None or Path(checkpoint.path).resolve() != stored.resolve()):
        newer = load_checkpoint(stored)
        if payload is None or int(newer["step"]) > int(payload["step"]):
            logger.warning(
                "Ray Train handed back %s; resuming from the newer checkpoint %s (step %s) found in storage",
                checkpoint.path if checkpoint is not None else "no checkpoint", stored, newer["step"],
            )
            payload = newer
    if payload is not None:
        logger.info("resuming from checkpoint at step %s", payload.get("step"))
    return payload


def autocast_context(amp: str, device: torch.device) -> torch.autocast:
    """The forward's autocast for ``train.amp``: bf16 on GPU or CPU (oneDNN uses AMX where the CPU has it), fp16
    on GPU only (the config refuses fp16 without GPUs); weights, optimizer state and gradients stay float32."""
    if amp == "none":
        return torch.autocast(device_type=device.type, enabled=False)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"train.amp: {amp} autocast needs a GPU, but this worker runs on {device}; use bf16 or none")


class _Trainer:
    """State and steps of one worker's training (keeps ``train_loop_per_worker`` short)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        from seqformer.platform.data import TrainBatches

        self.exp = exp = validate(config["experiment"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        os.environ["SEQFORMER_RANK"] = str(self.rank)
        setup_logging(rank=self.rank)
        torch.set_num_threads(exp.resources.torch_threads or max(1, int(exp.resources.cpus_per_worker)))
        seed_everything(exp.train.seed + self.rank)
        self.device = ray.train.torch.get_device() if exp.resources.use_gpu else torch.device("cpu")
        model = build_model(exp.model).to(self.device)
        self.criterion = build_criterion(exp.model)
        self.optimizer = build_optimizer(model, exp)
        self.state = TrainState()
        self.scheduler = build_scheduler(self.optimizer, exp, self.state.lr_drop_steps)
        payload = _resume_payload(exp)
        if payload is not None:
            restore(payload, model, self.optimizer, self.scheduler, self.state)
            seed_everything(exp.train.seed + self.rank + 1000 * self.state.step)
        elif exp.train.init_checkpoint:
            init_from_checkpoint(model, exp)
        if self.world > 1:
            model = ray.train.torch.prepare_model(
                model, move_to_device=False, parallel_strategy_kwargs={"find_unused_parameters": True}
            )
        self.model = model
        self.batches = TrainBatches(exp, ray.train.get_dataset_shard("train"), seed=exp.train.seed + self.rank)
        self.tracker = None
        self.run_id = config.get("mlflow_run_id")
        if self.rank == 0 and self.run_id:
            from seqformer.platform.tracking import Tracker

            self.tracker = Tracker(config["tracking_uri"])
        self.debug_dir = config.get("debug_dir")
        self.meters: dict[str, SmoothedValue] = defaultdict(SmoothedValue)

    # ------------------------------------------------------------------------------------------- helpers
    def total_steps(self) -> int | None:
        limits = []
        if self.exp.train.max_steps:
            limits.append(self.exp.train.max_steps)
        per_epoch = self.batches.steps_per_epoch()
        if per_epoch:
            limits.append(per_epoch * self.exp.train.epochs // self.exp.train.grad_accum_steps)
        return min(limits) if limits else None

    def should_stop(self, started: float) -> bool:
        budget = self.exp.train.time_budget_s
        over_time = budget is not None and self.state.train_seconds + (time.monotonic() - started) >= budget
        max_steps = self.exp.train.max_steps
        done = over_time or (max_steps is not None and self.state.step >= max_steps)
        return _any_rank(done, self.world)

    def autocast(self) -> Any:
        return autocast_context(self.exp.train.amp, self.device)

    def forward_backward(self, batch: dict[str, Any], sync: bool) -> dict[str, float]:
        clips = [clip.to(self.device, non_blocking=True) for clip in batch["clips"]]
        targets = [
            {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in batch["targets"]
        ]
        context = self.model.no_sync() if (not sync and hasattr(self.model, "no_sync")) else _nullcontext()
        with context:
            with self.autocast():
                out = self.model(clips)
                losses = self.criterion(out, targets)
            weights = self.criterion.weight_dict
            total = sum(losses[k] * weights[k] for k in losses if k in weights)
            (total / self.exp.train.grad_accum_steps).backward()
        # the losses themselves, not their per-layer copies (``loss_ce_0``, ``loss_ce_enc``) nor logged errors
        values = {
            k: float(v.detach()) for k, v in losses.items() if k.startswith("loss_") and not _LAYER_COPY.search(k)
        }
        values["loss"] = float(total.detach())
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"loss is {values['loss']} at step {self.state.step}: {values}")
        return values

    def budget_drop_due(self, elapsed: float) -> bool:
        """Whether the next ``lr_drop_unit: budget`` milestone has come after ``elapsed`` training seconds on any
        rank (one all-reduce while milestones remain, so every rank drops at the same step)."""
        train, done = self.exp.train, len(self.state.lr_drop_steps)
        if train.lr_drop_unit != "budget" or done >= len(train.lr_drop):  # the same on every rank
            return False
        return _any_rank(budget_milestone_due(train, done, elapsed), self.world)

    def optimizer_step(self, elapsed: float) -> float:
        """Clip, step the optimiser and the step-unit scheduler; ``elapsed``: training seconds so far (budget
        milestones)."""
        grad_norm = 0.0
        if self.exp.train.clip_max_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.exp.train.clip_max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        if self.budget_drop_due(elapsed):
            self.state.lr_drop_steps.append(self.state.step)
            logger.info("learning rate x %g at step %d (%.0f s into the training budget)",
                        self.exp.train.lr_gamma, self.state.step, elapsed)
        if self.exp.train.lr_drop_unit in ("step", "budget"):
            self.scheduler.step()
        return grad_norm


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _log_line(trainer: _Trainer, total: int | None, started: float, data_time: float, step_time: float) -> str:
    state = trainer.state
    elapsed = state.train_seconds + time.monotonic() - started
    losses = " ".join(f"{k} {m.median:.4f}" for k, m in sorted(trainer.meters.items()))
    eta = ""
    budget = trainer.exp.train.time_budget_s
    if total and state.step:
        remaining = elapsed / state.step * (total - state.step)
        eta = f" ETA {format_seconds(min(remaining, budget - elapsed) if budget else remaining)}"
    elif budget:
        eta = f" ETA {format_seconds(max(0.0, budget - elapsed))}"
    lr = trainer.optimizer.param_groups[0]["lr"]
    return (
        f"step {state.step}{'/' + str(total) if total else ''} epoch {state.epoch} {losses} lr {lr:.2e} "
        f"data {data_time:.3f}s step {step_time:.3f}s peak_mem {_peak_memory_gb():.2f}GB{eta}"
    )


def _validate(trainer: _Trainer) -> dict[str, float]:
    """Rank 0 evaluates on the held-out split; other ranks wait at the barrier."""
    from seqformer.platform.data import evaluate_model

    metrics: dict[str, float] = {}
    if trainer.rank == 0 and trainer.exp.eval.enabled and trainer.exp.data.val_annotations:
        started = time.monotonic()
        result = evaluate_model(_unwrap(trainer.model), trainer.exp, device=trainer.device)
        metrics = {f"val/{k}": float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float))}
        logger.info(
            "validation at step %d (%.1fs): %s",
            trainer.state.step,
            time.monotonic() - started,
            " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k[4:] in ("AP", "AP50", "AP75", "AR1", "AR10")),
        )
        if trainer.tracker is not None:
            trainer.tracker.log_metrics(trainer.run_id, metrics, trainer.state.step)
            for image in result.get("images", []):
                trainer.tracker.log_artifact(trainer.run_id, image, f"val_overlays/step_{trainer.state.step:07d}")
        trainer.state.last_val = metrics
        key = f"val/{trainer.exp.eval.metric}"
        if key in metrics and (trainer.state.best_metric is None or metrics[key] > trainer.state.best_metric):
            trainer.state.best_metric = metrics[key]
    if trainer.world > 1 and dist.is_initialized():
        dist.barrier()
    return metrics


def _report(trainer: _Trainer, metrics: dict[str, float], with_checkpoint: bool) -> None:
    import ray.train

    full = {"step": trainer.state.step, "epoch": trainer.state.epoch, **metrics}
    score_key = f"val/{trainer.exp.eval.metric}"
    # Only a fresh validation scores a checkpoint: an earlier step's metric would rank these weights by another
    # model's result. Unscored checkpoints rank lowest; Ray Train still keeps the latest one for resuming.
    full.setdefault(score_key, -1.0)
    if with_checkpoint and trainer.rank == 0:
        payload = checkpoint_payload(trainer.model, trainer.optimizer, trainer.scheduler, trainer.state, trainer.exp)
        with tempfile.TemporaryDirectory(prefix="seqformer-ckpt-") as folder:
            save_checkpoint(folder, payload)
            ray.train.report(full, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report(full, checkpoint=None)


def _dump_debug(trainer: _Trainer) -> None:
    """Write a parameter fingerprint per rank (tests check that DDP kept ranks identical)."""
    if not trainer.debug_dir:
        return
    core = _unwrap(trainer.model)
    total = torch.zeros((), dtype=torch.float64)
    for value in core.parameters():  # parameters only: BatchNorm running statistics are per rank by design
        total += value.detach().double().abs().sum()
    import ray

    Path(trainer.debug_dir).mkdir(parents=True, exist_ok=True)
    node = ray.get_runtime_context().get_node_id()
    line = f"{trainer.state.step} {total.item():.10e} {node}\n"
    (Path(trainer.debug_dir) / f"rank{trainer.rank}.txt").write_text(line)


FAULT_ENV = "SEQFORMER_FAULT_INJECT"


def inject_fault(exp: ExperimentConfig, step: int, rank: int) -> None:
    """Test hook of the reliability tests; does nothing unless ``$SEQFORMER_FAULT_INJECT`` is set.

    ``SEQFORMER_FAULT_INJECT=kill_after_step=N`` makes rank 0 send SIGKILL to its own process once, after optimiser
    step N (its metrics and any checkpoint of that step already reported), as a crashed node would. A marker file
    ``.fault_injected_after_step_N`` under ``resources.storage_path/<name>/`` makes it fire only once across the
    worker-group restarts that follow.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec or rank != 0:
        return
    key, _, value = spec.partition("=")
    if key != "kill_after_step" or not value.isdigit():
        raise ValueError(f"${FAULT_ENV}={spec!r}: expected kill_after_step=N (unset it outside reliability tests)")
    if int(value) != step:
        return
    marker = Path(exp.resources.storage_path).resolve() / exp.name / f".fault_injected_after_step_{step}"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"pid {os.getpid()}\n")
    logger.warning("fault injection: SIGKILL to worker rank %d (pid %d) after step %d", rank, os.getpid(), step)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: ``experiment`` (resolved dict), ``mlflow_run_id``, ``tracking_uri`` and an
    optional ``debug_dir``."""
    trainer = _Trainer(config)
    exp, state = trainer.exp, trainer.state
    total = trainer.total_steps()
    logger.info(
        "worker %d/%d training from step %d (%s steps planned)", trainer.rank, trainer.world, state.step, total or "?"
    )
    started = time.monotonic()
    step_start_count = state.step
    last_log = -float("inf")
    last_ckpt_step = state.step
    every_eval = exp.eval.every_steps
    trainer.model.train()
    stop = trainer.should_stop(started)
    while not stop and state.epoch < exp.train.epochs:
        micro = 0
        batches = iter(trainer.batches.epoch(state.epoch))
        while True:
            data_clock = time.monotonic()
            batch = next(batches, None)
            # Ranks can run out at different steps (items whose instances all vanish are skipped); DDP needs the
            # same number of backward passes everywhere, so the epoch ends for all when it ends for one.
            if _any_rank(batch is None, trainer.world):
                for _ in batches:  # finish this rank's stream so the next epoch starts cleanly
                    pass
                state.epoch += 1
                if exp.train.lr_drop_unit == "epoch":
                    trainer.scheduler.step()
                stop = trainer.should_stop(started)
                break
            data_time = time.monotonic() - data_clock
            step_clock = time.monotonic()
            micro += 1
            sync = micro % exp.train.grad_accum_steps == 0
            values = trainer.forward_backward(batch, sync)
            if not sync:
                continue
            trainer.optimizer_step(state.train_seconds + time.monotonic() - started)
            for key, value in values.items():
                trainer.meters[key].update(value)
            now = time.monotonic()
            if now - last_log >= exp.train.log_every_s or state.step == 1:
                last_log = now
                logger.info(_log_line(trainer, total, started, data_time, now - step_clock))
                if trainer.tracker is not None:
                    logged = {f"train/{k}": m.median for k, m in trainer.meters.items()}
                    logged["train/lr"] = trainer.optimizer.param_groups[0]["lr"]
                    trainer.tracker.log_metrics(trainer.run_id, logged, state.step)
            stop = trainer.should_stop(started)
            # the same decisions on every rank: only rank 0 has validation metrics, but every rank must report
            validate_now = bool(every_eval and state.step % every_eval == 0 and not stop)
            val_metrics = _validate(trainer) if validate_now else {}
            # every validated model is a checkpoint, so the kept best really is the best validated one
            due = state.step - last_ckpt_step >= exp.train.checkpoint_every_steps or validate_now
            if due and not stop:
                state.train_seconds += time.monotonic() - started
                started = time.monotonic()
                _report(trainer, val_metrics, with_checkpoint=True)
                last_ckpt_step = state.step
            if not stop:
                inject_fault(exp, state.step, trainer.rank)
            if stop:
                break
    state.train_seconds += time.monotonic() - started
    final_metrics = _validate(trainer)
    steps_done = state.step - step_start_count
    summary = {
        "train_seconds": state.train_seconds,
        "clips_per_second": steps_done
        * exp.train.batch_size
        * exp.train.grad_accum_steps
        * trainer.world
        / max(state.train_seconds, 1e-9),
        "peak_memory_gb": _peak_memory_gb(),
    }
    logger.info(
        "training done: %d steps in %s, %.2f clips/s, peak memory %.2f GB",
        state.step,
        format_seconds(state.train_seconds),
        summary["clips_per_second"],
        summary["peak_memory_gb"],
    )
    _dump_debug(trainer)
    _report(trainer, {**final_metrics, **{f"summary/{k}": v for k, v in summary.items()}}, with_checkpoint=True)
