"""Sweeps: bad sweep files fail before any trial starts; a 3-trial ASHA sweep runs, is tracked, registers, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqformer.platform.config import ConfigError, load_experiment
from seqformer.platform.demo import output_overrides
from seqformer.platform.tune import validate_sweep

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke" / "tiny_cpu.yaml"


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    validate_sweep(load_experiment(path))


def _sweep(tmp_path, text):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {SMOKE}\n{text}")
    return load_experiment(path)


def test_unknown_key_in_search_space_is_named(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  search_space:\n    train.lrr: {choice: [0.1, 0.2]}\n")
    with pytest.raises(ConfigError, match=r"key 'train\.lrr'.*unknown key 'train\.lrr'; did you mean 'train\.lr'"):
        validate_sweep(exp)


def test_empty_choice_list_is_named(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  search_space:\n    train.lr: {choice: []}\n")
    with pytest.raises(ConfigError, match=r"tune\.search_space\.train\.lr\.choice: needs a non-empty list"):
        validate_sweep(exp)


def test_wrong_value_type_is_named(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  search_space:\n    model.num_queries: {grid: [10, many]}\n")
    with pytest.raises(ConfigError, match=r"key 'model\.num_queries' with value 'many'"):
        validate_sweep(exp)


def test_bad_bounds(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  search_space:\n    train.lr: {loguniform: [0.0, 1.0e-3]}\n")
    with pytest.raises(ConfigError, match=r"train\.lr\.loguniform: needs 0 < low < high"):
        validate_sweep(exp)


def test_metric_no_trial_reports(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  metric: val/APP\n  search_space:\n    train.lr: {grid: [0.1]}\n")
    with pytest.raises(ConfigError, match=r"tune\.metric 'val/APP' is not reported by any trial"):
        validate_sweep(exp)


def test_unknown_distribution(tmp_path):
    exp = _sweep(tmp_path, "tune:\n  search_space:\n    train.lr: {normal: [0, 1]}\n")
    with pytest.raises(ConfigError, match=r"unknown distribution 'normal'"):
        validate_sweep(exp)


@pytest.mark.ray
@pytest.mark.e2e
def test_three_trial_asha_sweep_tracks_registers_and_resumes(tmp_path):
    import ray
    from mlflow.tracking import MlflowClient

    from seqformer.platform.cli import main

    out = tmp_path / "sweep"
    args = [*output_overrides(out), "train.max_steps=2", "train.checkpoint_every_steps=1", "eval.every_steps=1",
            "tune.scheduler=asha", "tune.grace_period=1", "tune.max_concurrent_trials=1",
            "tune.search_space={train.lr: {grid: [1.0e-4, 2.0e-4, 4.0e-4]}}", "name=tiny_sweep"]
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20)
    try:
        assert main(["tune", str(SMOKE), *args]) == 0
        uri = f"sqlite:///{out / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.get_experiment_by_name("seqformer-smoke")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and len(children) == 3
        assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
        assert all("val/AP" in c.data.metrics for c in children)
        assert sorted(c.data.params["train.lr"] for c in children) == ["0.0001", "0.0002", "0.0004"]
        artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id, "sweep")}
        assert "sweep/sweep_summary.md" in artifacts and "sweep/sweep_metric_vs_keys.png" in artifacts
        champion = client.get_model_version_by_alias("seqformer-smoke", "champion")
        assert champion.tags["run_id"] == parents[0].info.run_id
        trials = sorted((out / "outputs").glob("tiny_sweep_*/trial.json"))
        assert len(trials) == 3
        stamps = {p: p.stat().st_mtime_ns for p in trials}
        assert main(["tune", str(SMOKE), *args, "--resume"]) == 0
        assert {p: p.stat().st_mtime_ns for p in trials} == stamps  # no finished trial ran again
        runs_after = client.search_runs([experiment.experiment_id])
        assert len([r for r in runs_after if "mlflow.parentRunId" in r.data.tags]) == 3
        assert json.loads(trials[0].read_text())["metrics"]["step"] == 2
    finally:
        ray.shutdown()
