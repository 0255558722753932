"""``seqformer demo``: the end-to-end CPU demo on a fresh machine.

Generates the synthetic dataset, prepares it with Ray Data, trains the demo experiment with 2 Ray Train workers
(embedded Ray on 127.0.0.1, embedded MLflow in SQLite), evaluates the best checkpoint on the synthetic val split,
registers it, runs batch inference on the val videos, and writes ``DIR/metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from seqformer.platform.config import ExperimentConfig, load_experiment

logger = logging.getLogger(__name__)

DEMO_EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny_cpu.yaml"


def output_overrides(output: Path) -> list[str]:
    """Overrides that put every path of a demo-style experiment under ``output``."""
    return [
        f"output_dir={output / 'outputs'}",
        f"data.root={output / 'data' / 'train'}",
        f"data.train_annotations={output / 'data' / 'train' / 'annotations.json'}",
        f"data.val_root={output / 'data' / 'val'}",
        f"data.val_annotations={output / 'data' / 'val' / 'annotations.json'}",
        f"data.prepared_dir={output / 'prepared'}",
        f"resources.storage_path={output / 'ray_results'}",
        f"tracking.tracking_uri=sqlite:///{output / 'mlflow.db'}",
        f"tracking.artifact_location={output / 'mlartifacts'}",
    ]


def demo_experiment(output: Path, overrides: list[str], experiment: Path = DEMO_EXPERIMENT) -> ExperimentConfig:
    """The demo experiment with every path under ``output``."""
    if not experiment.is_file():
        raise FileNotFoundError(
            f"demo experiment {experiment} not found; run the demo from a checkout of the repository"
        )
    return load_experiment(experiment, [*output_overrides(output), *overrides])


def _phase(number: int, total: int, text: str, started: float) -> None:
    logger.info("[%d/%d] %s (elapsed %.0f s)", number, total, text, time.monotonic() - started)


def run_demo(output: str | Path, overrides: list[str] | None = None, infer: bool = True) -> dict[str, Any]:
    """Run the whole demo; returns the metrics written to ``output/metrics.json``."""
    from seqformer.platform.data import ensure_synthetic, prepare_experiment
    from seqformer.platform.driver import train_experiment
    from seqformer.platform.pipeline import evaluate_trained

    started = time.monotonic()
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    exp = demo_experiment(output, list(overrides or []))
    total = 5 if infer else 4
    _phase(1, total, f"generating synthetic YouTube-VIS data under {output / 'data'}", started)
    ensure_synthetic(exp)
    _phase(2, total, f"preparing clip records with Ray Data into {exp.data.prepared_dir}", started)
    manifest = prepare_experiment(exp)
    logger.info("%d clip records, %d skipped", manifest["records"], len(manifest["skipped"]))
    budget = exp.train.time_budget_s
    _phase(3, total, f"training with {exp.resources.num_workers} workers"
           + (f" for {budget:.0f} s" if budget else ""), started)
    outcome = train_experiment(exp)
    _phase(4, total, "evaluating the best checkpoint on the synthetic val split", started)
    out_dir = Path(exp.output_dir) / exp.name
    evaluation = evaluate_trained(exp, out_dir)
    metrics = {**evaluation["metrics"], "train_seconds": outcome.train_seconds, "steps": outcome.metrics.get("step")}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    summary: dict[str, Any] = {"metrics": metrics, "outcome": outcome, "exp": exp, "paths": {
        "metrics": str(output / "metrics.json"),
        "results": str(out_dir / "results.json"),
        "validation overlays": str(out_dir / "overlays"),
        "best checkpoint": str(outcome.checkpoint_dir),
        "training curves": str(out_dir / "training_curves.png"),
    }}
    if outcome.model_version is not None:
        summary["paths"]["registered model"] = (
            f"models:/{exp.tracking.registered_model_name}/{outcome.model_version}"
            + (" (@champion)" if outcome.champion else "")
        )
    if infer:
        _phase(5, total, "batch inference over the val videos", started)
        summary["paths"]["batch inference"] = str(_infer_val(exp, output))
    summary["mlflow_ui"] = (
        f"mlflow ui --backend-store-uri sqlite:///{output / 'mlflow.db'} --host 127.0.0.1 --port 5000"
    )
    logger.info("demo finished in %.0f s", time.monotonic() - started)
    return summary


def _infer_val(exp: ExperimentConfig, output: Path) -> Path:
    from seqformer.platform.infer import InferOptions, infer_folder
    from seqformer.platform.model_source import experiment_model_dir

    target = output / "inference"
    summary = infer_folder(
        str(experiment_model_dir(exp)),
        Path(str(exp.data.val_root)) / "JPEGImages",
        target,
        InferOptions(short_side=exp.data.eval_short_side, top_k=exp.eval.top_k, window=exp.eval.window,
                     overlap=exp.eval.window_overlap if exp.eval.window else 0, nms_iou=exp.eval.nms_iou,
                     coverage_exponent=exp.eval.coverage_exponent, cpus_per_actor=1),
    )
    logger.info("batch inference: %d videos processed, %d skipped, %d failed, %.1f frames/s",
                len(summary["processed"]), len(summary["skipped"]), len(summary["failed"]),
                summary.get("frames_per_second", 0.0))
    return target
