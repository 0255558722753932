"""Plots rendered as PNG for people: training curves of a run, a sweep's metric against each swept key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(tracker: Any, run_id: str, path: str | Path) -> bool:
    """Loss terms and validation AP of one MLflow run against the step; False when there is nothing to plot."""
    run = tracker.client.get_run(run_id)
    keys = sorted(run.data.metrics)
    losses = [k for k in keys if k.startswith("train/loss")]
    vals = [k for k in keys if k in ("val/AP", "val/AP50", "val/AP75", "val/AR10")]
    if not losses and not vals:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in losses:
        history = tracker.metric_history(run_id, key)
        if history:
            steps, values = zip(*sorted(history))
            axes[0].plot(steps, values, label=key.split("/", 1)[1], linewidth=1.8 if key == "train/loss" else 1.0)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (smoothed)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title("training losses")
    for key in vals:
        history = tracker.metric_history(run_id, key)
        if history:
            steps, values = zip(*sorted(history))
            axes[1].plot(steps, values, marker="o", label=key.split("/", 1)[1])
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("YouTube-VIS metric")
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8)
    axes[1].set_title("validation")
    fig.suptitle(run.info.run_name or run_id)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_metric_vs_keys(rows: list[dict[str, Any]], metric: str, keys: list[str], path: str | Path) -> bool:
    """One panel per swept key: the metric of every trial against that key's value."""
    usable = [r for r in rows if r.get(metric) is not None]
    if not usable or not keys:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    for axis, key in zip(axes[0], keys):
        xs = [r.get(key) for r in usable]
        ys = [float(r[metric]) for r in usable]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            axis.scatter(xs, ys)
        else:
            labels = sorted({str(x) for x in xs})
            axis.scatter([labels.index(str(x)) for x in xs], ys)
            axis.set_xticks(range(len(labels)), labels, rotation=30)
        axis.set_xlabel(key)
        axis.set_ylabel(metric)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
