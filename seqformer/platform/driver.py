"""The training driver: builds one ``TorchTrainer`` for an experiment, runs it, then tracks and registers the result."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqformer.platform.checkpoint import CHECKPOINT_FILE, latest_verified, verify_checkpoint
from seqformer.platform.config import ExperimentConfig, flatten, to_dict, to_yaml, with_absolute_paths
from seqformer.platform.model_source import experiment_model_dir
from seqformer.platform.tracking import (
    Tracker,
    default_artifact_location,
    git_revision,
    package_versions,
    resolve_tracking_uri,
)

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "seqformer.run_key"


@dataclass
class TrainOutcome:
    """What a finished training run left behind."""

    metrics: dict[str, Any]
    checkpoint_dir: Path | None
    run_id: str | None
    model_version: int | None = None
    champion: bool = False
    train_seconds: float = 0.0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    """Metrics reported with the kept (best) checkpoint; the registry tag holds its validation metric."""
    extra: dict[str, Any] = field(default_factory=dict)


def run_storage(exp: ExperimentConfig) -> Path:
    return Path(exp.resources.storage_path).resolve()


def latest_good_checkpoint(exp: ExperimentConfig) -> Path | None:
    """Newest checkpoint of an earlier job of this experiment that verifies (bad ones are skipped with a warning)."""
    root = run_storage(exp) / exp.name
    folders = sorted((p for p in root.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return latest_verified(folders)


def open_tracking(exp: ExperimentConfig, parent_run_id: str | None = None) -> tuple[Tracker, str] | None:
    """Create (or find, after a restart) the MLflow run of this experiment and log its set-up."""
    if not exp.tracking.enabled:
        return None
    uri = resolve_tracking_uri(exp.tracking.tracking_uri)
    tracker = Tracker(uri, default_artifact_location(uri, exp.tracking.artifact_location))
    run_key = f"{exp.name}@{run_storage(exp)}"
    run_id = tracker.find_run(exp.tracking.experiment_name, RUN_KEY_TAG, run_key)
    if run_id is not None and tracker.client.get_run(run_id).info.status == "RUNNING":
        logger.info("continuing MLflow run %s", run_id)
    else:
        run_id = tracker.start_run(
            exp.tracking.experiment_name,
            exp.tracking.run_name or exp.name,
            tags={RUN_KEY_TAG: run_key},
            parent_run_id=parent_run_id,
        )
    tracker.log_params(run_id, flatten(to_dict(exp)))
    tracker.set_tags(run_id, {"git_sha": git_revision(), **{f"version.{k}": v for k, v in package_versions().items()}})
    tracker.log_text(run_id, to_yaml(exp), "config/resolved_config.yaml")
    return tracker, run_id


def _fit(exp: ExperimentConfig, config: dict[str, Any], callbacks: list[Any]) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from seqformer.pipelines.ray_data import training_dataset
    from seqformer.platform.train_loop import train_loop_per_worker

    scaling = ScalingConfig(
        num_workers=exp.resources.num_workers,
        use_gpu=exp.resources.use_gpu,
        resources_per_worker={"CPU": exp.resources.cpus_per_worker, **({"GPU": 1} if exp.resources.use_gpu else {})},
        placement_strategy=exp.resources.placement_strategy,
    )
    run_config = RunConfig(
        name=exp.name,
        storage_path=str(run_storage(exp)),
        checkpoint_config=CheckpointConfig(
            num_to_keep=exp.train.keep_checkpoints,
            checkpoint_score_attribute=f"val/{exp.eval.metric}",
            checkpoint_score_order="max",
        ),
        failure_config=FailureConfig(max_failures=exp.train.max_failures),
        callbacks=callbacks or None,
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=scaling,
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if exp.resources.use_gpu else "gloo"),
        datasets={"train": training_dataset(exp.data.prepared_dir, shuffle_seed=exp.train.seed)},
        # No resume_from_checkpoint: Train V2 raises on it. The same RunConfig(name, storage_path) makes Ray restore
        # its checkpoint list from storage, and each worker resumes from the newest verified checkpoint there.
    )
    return trainer.fit()


def train_experiment(
    exp: ExperimentConfig,
    debug_dir: str | None = None,
    parent_run_id: str | None = None,
    callbacks: list[Any] | None = None,
) -> TrainOutcome:
    """Train ``exp`` with Ray Train (prebuild kernels, fit, keep the best checkpoint, track, register).

    Args:
        exp: the resolved experiment.
        debug_dir: where workers write per-rank parameter fingerprints (tests).
        parent_run_id: MLflow parent run (sweeps): this run becomes its child.
        callbacks: extra Ray Train callbacks (``TuneReportCallback`` inside a Tune trial).
    """
    from seqformer.platform.ray_env import init_ray, prebuild_kernels_on_all_nodes

    exp = with_absolute_paths(exp)  # Ray Train workers run in their own working directories
    init_ray(exp.resources.ray_address)
    if exp.model.msda_backend != "reference":
        prebuild_kernels_on_all_nodes(cuda=exp.resources.use_gpu)
    tracking = open_tracking(exp, parent_run_id)
    run_dir = run_storage(exp) / exp.name
    earlier = list(run_dir.glob("checkpoint_*"))
    if earlier:
        # the workers pick (and verify) the newest good one; hashing them here as well would only cost time
        logger.info("found %d checkpoint(s) of an earlier job under %s; training continues from the newest good one",
                    len(earlier), run_dir)
    config = {
        "experiment": to_dict(exp),
        "mlflow_run_id": tracking[1] if tracking else None,
        "tracking_uri": tracking[0].tracking_uri if tracking else None,
        "debug_dir": debug_dir or os.environ.get("SEQFORMER_DEBUG_DIR"),
    }
    started = time.monotonic()
    try:
        result = _fit(exp, config, list(callbacks or []))
    except Exception:
        if tracking:
            tracking[0].end_run(tracking[1], status="FAILED")
        raise
    wall = time.monotonic() - started
    metrics = dict(result.metrics or {})
    best, best_metrics = _best_checkpoint(result)
    outcome = TrainOutcome(
        metrics=metrics,
        checkpoint_dir=None,
        run_id=tracking[1] if tracking else None,
        train_seconds=float(metrics.get("summary/train_seconds", wall)),
        best_metrics=best_metrics,
    )
    if best is not None:
        outcome.checkpoint_dir = _keep_final(best, exp)
    if tracking:
        _finish_tracking(exp, tracking, outcome)
    return outcome


def _best_checkpoint(result: Any) -> tuple[Path | None, dict[str, Any]]:
    """The kept checkpoint and the metrics reported with it."""
    candidates = list(getattr(result, "best_checkpoints", None) or [])
    if candidates:
        # Ray Train keeps this list sorted worst → best by the score attribute (ties: older first), so the best,
        # and on equal scores the newest, is the last entry.
        checkpoint, reported = candidates[-1]
        return Path(checkpoint.path), dict(reported or {})
    if result.checkpoint is not None:
        return Path(result.checkpoint.path), dict(result.metrics or {})
    return None, {}


def _keep_final(best: Path, exp: ExperimentConfig) -> Path:
    """Copy the best checkpoint to ``<output_dir>/<name>/model`` (what evaluate / infer / register use)."""
    target = experiment_model_dir(exp)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(best, staging)
    verify_checkpoint(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    logger.info("best checkpoint kept at %s", target)
    return target


def _finish_tracking(exp: ExperimentConfig, tracking: tuple[Tracker, str], outcome: TrainOutcome) -> None:
    from seqformer.platform.plots import plot_training_curves

    tracker, run_id = tracking
    curve = Path(exp.output_dir) / exp.name / "training_curves.png"
    if plot_training_curves(tracker, run_id, curve):
        tracker.log_artifact(run_id, curve, "plots")
    if outcome.checkpoint_dir is not None:
        model_uri = tracker.log_model(run_id, outcome.checkpoint_dir / CHECKPOINT_FILE)
        outcome.extra["model_uri"] = model_uri
        if exp.tracking.registered_model_name:
            # the version holds the kept checkpoint, so its tag is that checkpoint's metric (not the last one's)
            metric = outcome.best_metrics.get(f"val/{exp.eval.metric}")
            value = float(metric) if metric is not None and float(metric) >= 0 else None
            outcome.model_version, outcome.champion = tracker.register(
                model_uri, exp.tracking.registered_model_name, run_id, f"val_{exp.eval.metric}", value
            )
    tracker.end_run(run_id)
