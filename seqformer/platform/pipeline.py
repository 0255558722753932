"""The whole experiment as its YAML declares it: prepare → train → evaluate → register (``seqformer run``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqformer.platform.config import ExperimentConfig

logger = logging.getLogger(__name__)

PAPER_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10")
ALL_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def metrics_table(metrics: dict[str, Any]) -> str:
    """The paper's five numbers first, then the rest, as percentages (-1 stays -1)."""
    keys = [*PAPER_KEYS, *(k for k in ALL_KEYS if k not in PAPER_KEYS)]

    def cell(key: str) -> str:
        value = metrics.get(key)
        if value is None:
            return "-"
        return "-1" if value < 0 else f"{100 * value:.1f}"

    header = " | ".join(f"{k:>5}" for k in keys)
    return f"{header}\n{' | '.join(f'{cell(k):>5}' for k in keys)}"


@dataclass
class ExperimentSummary:
    metrics: dict[str, Any]
    train_seconds: float
    paths: dict[str, str] = field(default_factory=dict)
    registered: str | None = None

    def table(self) -> str:
        return metrics_table(self.metrics)


def evaluate_trained(exp: ExperimentConfig, out_dir: Path) -> dict[str, Any]:
    """Score the experiment's best checkpoint on the held-out split; writes results.json and metrics.json."""
    from seqformer.pipelines.evaluation import write_results_json
    from seqformer.platform.data import evaluate_model
    from seqformer.platform.model_source import experiment_model_dir, load_model

    model, _ = load_model(experiment_model_dir(exp))
    evaluation = evaluate_model(model, exp, overlay_dir=out_dir / "overlays")
    write_results_json(evaluation["results"], out_dir / "results.json")
    (out_dir / "metrics.json").write_text(json.dumps(evaluation["metrics"], indent=2))
    return evaluation


def run_experiment(exp: ExperimentConfig) -> ExperimentSummary:
    """Prepare if needed, train, evaluate and register; returns the metrics and where the outputs are."""
    from seqformer.platform.data import is_prepared, prepare_experiment
    from seqformer.platform.driver import train_experiment

    out_dir = Path(exp.output_dir) / exp.name
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_prepared(exp):
        logger.info("step 1/3: preparing clip records into %s", exp.data.prepared_dir)
        prepare_experiment(exp)
    else:
        logger.info("step 1/3: clip records already prepared in %s", exp.data.prepared_dir)
    logger.info("step 2/3: training %s", exp.name)
    started = time.monotonic()
    outcome = train_experiment(exp)
    metrics: dict[str, Any] = {}
    paths = {"checkpoint": str(outcome.checkpoint_dir)}
    if exp.eval.enabled and exp.data.val_annotations and outcome.checkpoint_dir:
        logger.info("step 3/3: evaluating the best checkpoint on %s", exp.data.val_annotations)
        metrics = evaluate_trained(exp, out_dir)["metrics"]
        paths.update({"results": str(out_dir / "results.json"), "metrics": str(out_dir / "metrics.json")})
    registered = None
    if outcome.model_version is not None:
        registered = f"models:/{exp.tracking.registered_model_name}/{outcome.model_version}"
        paths["registered model"] = registered + (" (@champion)" if outcome.champion else "")
    logger.info("experiment %s done in %.0f s", exp.name, time.monotonic() - started)
    return ExperimentSummary(metrics=metrics, train_seconds=outcome.train_seconds, paths=paths, registered=registered)
