"""Ray Tune sweeps: one Ray Train run per trial (the Train V2 + Tune pattern), tracked as MLflow child runs.

A sweep YAML is an experiment YAML (usually ``base:`` an experiment) whose ``tune:`` section declares the metric,
scheduler, samples and ``search_space``. Only this module turns that declaration into Ray Tune objects.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from seqformer.platform.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    to_dict,
    validate,
    with_absolute_paths,
)

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform", "randint")
EVAL_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def reported_metrics(exp: ExperimentConfig) -> set[str]:
    """Metric names a trial of ``exp`` reports to Tune."""
    names = {"step", "epoch"}
    if exp.eval.enabled and exp.data.val_annotations:
        names |= {f"val/{m}" for m in EVAL_METRICS}
    names |= {"summary/train_seconds", "summary/clips_per_second", "summary/peak_memory_gb"}
    return names


def _sample_value(key: str, spec: Any) -> Any:
    """A representative value of a distribution (used to validate the key and type before any trial starts)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(
            f"tune.search_space.{key}: expected one of {{{', '.join(DISTRIBUTIONS)}}}: <values>, got {spec!r}"
        )
    ((kind, values),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"tune.search_space.{key}: unknown distribution {kind!r}; use one of {DISTRIBUTIONS}")
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"tune.search_space.{key}.{kind}: needs a non-empty list of values, got {values!r}")
        return values
    if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
        raise ConfigError(f"tune.search_space.{key}.{kind}: needs [low, high] numbers, got {values!r}")
    low, high = values
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"tune.search_space.{key}.{kind}: needs 0 < low < high (log) or low < high, got {values}")
    return [low, high - 1 if kind == "randint" else high]


def validate_sweep(exp: ExperimentConfig) -> None:
    """Fail before any trial starts: unknown keys, empty choices, bad bounds, a metric no trial reports."""
    space = exp.tune.search_space
    if not space:
        raise ConfigError("tune.search_space is empty: a sweep needs at least one key to vary")
    base = to_dict(exp)
    for key, spec in space.items():
        for value in _sample_value(key, spec):
            try:
                validate(apply_overrides(base, [f"{key}={json.dumps(value)}"]), f"tune.search_space.{key}")
            except ConfigError as err:
                raise ConfigError(f"tune.search_space: key '{key}' with value {value!r}: {err}") from None
    if exp.tune.metric not in reported_metrics(exp):
        raise ConfigError(
            f"tune.metric {exp.tune.metric!r} is not reported by any trial; choose one of "
            f"{sorted(reported_metrics(exp))} (val/* metrics need eval.enabled and data.val_annotations)"
        )


def to_param_space(space: dict[str, Any]) -> dict[str, Any]:
    """YAML distributions → Ray Tune sample objects, keyed by the dotted config key."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        ((kind, values),) = spec.items()
        out[key] = {
            "grid": lambda v: tune.grid_search(list(v)),
            "choice": lambda v: tune.choice(list(v)),
            "uniform": lambda v: tune.uniform(*v),
            "loguniform": lambda v: tune.loguniform(*v),
            "randint": lambda v: tune.randint(*v),
        }[kind](values)
    return out


def trial_experiment(base: dict[str, Any], params: dict[str, Any], trial_id: str) -> ExperimentConfig:
    """The experiment one trial trains: the sweep's base with the sampled values, its own name and storage."""
    data = apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in params.items()])
    data["name"] = f"{base['name']}_{trial_id}"
    data.setdefault("tracking", {})["registered_model_name"] = None
    data["tracking"]["run_name"] = data["name"]
    return validate(data, f"trial {trial_id}")


def trial_driver(config: dict[str, Any]) -> None:
    """Tune trainable: builds and fits one TorchTrainer for the sampled config (Train V2 + Tune)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from seqformer.platform.driver import train_experiment

    params = {k: v for k, v in config.items() if not k.startswith("_")}
    context = ray.tune.get_context()
    trial_id = context.get_trial_id()
    exp = trial_experiment(config["_base"], params, trial_id)
    outcome = train_experiment(
        exp,
        parent_run_id=config.get("_parent_run_id"),
        callbacks=[TuneReportCallback()],
    )
    (Path(exp.output_dir) / exp.name).mkdir(parents=True, exist_ok=True)
    (Path(exp.output_dir) / exp.name / "trial.json").write_text(
        json.dumps(
            {
                "params": params,
                "metrics": outcome.metrics,
                "run_id": outcome.run_id,
                "checkpoint": str(outcome.checkpoint_dir) if outcome.checkpoint_dir else None,
            },
            default=str,
        )
    )


SWEEP_KEY_TAG = "seqformer.sweep_key"


def _scheduler(exp: ExperimentConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if exp.tune.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            grace_period=exp.tune.grace_period,
            reduction_factor=exp.tune.reduction_factor,
            max_t=10_000,
        )
    return FIFOScheduler()


def _parent_run(exp: ExperimentConfig, sweep_path: Path, resume: bool) -> tuple[Any, str] | None:
    from seqformer.platform.config import flatten, to_yaml
    from seqformer.platform.tracking import Tracker, default_artifact_location, resolve_tracking_uri

    if not exp.tracking.enabled:
        return None
    uri = resolve_tracking_uri(exp.tracking.tracking_uri)
    tracker = Tracker(uri, default_artifact_location(uri, exp.tracking.artifact_location))
    key = str(sweep_path)
    run_id = tracker.find_run(exp.tracking.experiment_name, SWEEP_KEY_TAG, key) if resume else None
    if run_id is None:
        run_id = tracker.start_run(exp.tracking.experiment_name, f"{exp.name} (sweep)", tags={SWEEP_KEY_TAG: key})
        tracker.log_params(run_id, flatten({"tune": to_dict(exp)["tune"]}))
        tracker.log_text(run_id, to_yaml(exp), "config/sweep_config.yaml")
    return tracker, run_id


def _summarise(exp: ExperimentConfig, results: Any, out_dir: Path) -> tuple[list[dict[str, Any]], Path, Path | None]:
    from seqformer.platform.plots import plot_metric_vs_keys

    keys = list(exp.tune.search_space)
    rows = []
    for result in results:
        if result.config is None:
            continue
        row = {"trial": Path(result.path).name if result.path else "?"}
        row.update({k: result.config.get(k) for k in keys})
        metrics = result.metrics or {}
        row[exp.tune.metric] = metrics.get(exp.tune.metric)
        row["step"] = metrics.get("step")
        row["error"] = str(result.error).splitlines()[0] if result.error else ""
        rows.append(row)
    rows.sort(
        key=lambda r: (
            r[exp.tune.metric] is None,
            -(r[exp.tune.metric] or 0) if exp.tune.mode == "max" else (r[exp.tune.metric] or 0),
        )
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "sweep_summary.md"
    header = ["trial", *keys, exp.tune.metric, "step", "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(r.get(h, "")) for h in header) + " |" for r in rows]
    table.write_text("\n".join(lines) + "\n")
    plot = out_dir / "sweep_metric_vs_keys.png"
    return rows, table, plot if plot_metric_vs_keys(rows, exp.tune.metric, keys, plot) else None


def run_sweep(exp: ExperimentConfig, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) the sweep ``exp.tune`` over ``exp``; returns the summary rows and the best trial."""
    from ray import tune

    from seqformer.platform.driver import run_storage
    from seqformer.platform.ray_env import init_ray, prebuild_kernels_on_all_nodes

    validate_sweep(exp)
    exp = with_absolute_paths(exp)  # trials run in their own working directories
    init_ray(exp.resources.ray_address)
    if exp.model.msda_backend != "reference":
        prebuild_kernels_on_all_nodes(cuda=exp.resources.use_gpu)
    storage = run_storage(exp)
    sweep_name = f"{exp.name}_sweep"
    sweep_path = storage / sweep_name
    parent = _parent_run(exp, sweep_path, resume)
    trainable = tune.with_resources(trial_driver, {"cpu": 0, "memory": 1})
    if resume and tune.Tuner.can_restore(str(sweep_path)):
        logger.info("resuming sweep %s: finished trials are kept, unfinished ones continue", sweep_path)
        tuner = tune.Tuner.restore(str(sweep_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        if resume:
            logger.warning("nothing to resume at %s; starting the sweep", sweep_path)
        param_space = {
            **to_param_space(exp.tune.search_space),
            "_base": to_dict(exp),
            "_parent_run_id": parent[1] if parent else None,
        }
        concurrent = exp.tune.max_concurrent_trials or max(1, int(_gpu_count()) or 1)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=exp.tune.metric,
                mode=exp.tune.mode,
                scheduler=_scheduler(exp),
                num_samples=exp.tune.num_samples,
                max_concurrent_trials=concurrent,
            ),
            run_config=tune.RunConfig(name=sweep_name, storage_path=str(storage)),
        )
    results = tuner.fit()
    out_dir = Path(exp.output_dir) / sweep_name
    rows, table, plot = _summarise(exp, results, out_dir)
    best = None
    try:
        best_result = results.get_best_result(metric=exp.tune.metric, mode=exp.tune.mode)
        best = {k: best_result.config.get(k) for k in exp.tune.search_space}
        best_metric = (best_result.metrics or {}).get(exp.tune.metric)
    except RuntimeError:
        best_result, best_metric = None, None
    registered = None
    if parent:
        tracker, run_id = parent
        tracker.log_artifact(run_id, table, "sweep")
        if plot:
            tracker.log_artifact(run_id, plot, "sweep")
        if best_metric is not None:
            tracker.log_metrics(run_id, {f"best/{exp.tune.metric}": best_metric}, 0)
        registered = _register_best(exp, tracker, run_id, best_result, best_metric)
        tracker.end_run(run_id)
    return {
        "rows": rows,
        "best": best,
        "best_metric": best_metric,
        "summary": str(table),
        "plot": str(plot),
        "registered": registered,
    }


def _gpu_count() -> float:
    import ray

    return ray.cluster_resources().get("GPU", 0)


def _register_best(exp: ExperimentConfig, tracker: Any, run_id: str, best: Any, metric: float | None) -> Any:
    """Register the best trial's checkpoint; ``@champion`` moves only if it beats the current champion."""
    if best is None or not exp.tracking.registered_model_name:
        return None
    trial_id = (best.metrics or {}).get("trial_id")
    trial_file = Path(exp.output_dir) / f"{exp.name}_{trial_id}" / "trial.json"
    if not trial_id or not trial_file.is_file():
        logger.warning("best trial %s left no trial record at %s; nothing registered", trial_id, trial_file)
        return None
    info = json.loads(trial_file.read_text())
    if not info.get("checkpoint"):
        logger.warning("best trial %s has no checkpoint; nothing registered", trial_id)
        return None
    model_uri = tracker.log_model(run_id, Path(info["checkpoint"]) / "checkpoint.pt")
    version, champion = tracker.register(
        model_uri, exp.tracking.registered_model_name, run_id, f"val_{exp.eval.metric}", metric, mode=exp.tune.mode
    )
    return {"version": version, "champion": champion, "model_uri": model_uri, "trial_id": trial_id}
