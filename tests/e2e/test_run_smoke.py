"""Instant test: `seqformer run` of the smoke experiment with 2 DDP workers on CPU, then what MLflow holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqformer.platform.cli import main
from seqformer.platform.demo import output_overrides

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke" / "tiny_cpu.yaml"

pytestmark = [pytest.mark.ray, pytest.mark.e2e]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    import ray

    out = tmp_path_factory.mktemp("smoke")
    debug = out / "debug"
    # data, outputs and Ray storage given relative to the working directory (as in a user's YAML): Ray Train
    # workers run in their own working directories, so the driver must hand them absolute paths
    overrides = [
        *output_overrides(Path(".")),
        f"tracking.tracking_uri=sqlite:///{out / 'mlflow.db'}",
        f"tracking.artifact_location={out / 'mlartifacts'}",
        "resources.num_workers=2",
        "train.max_steps=3",
        "train.epochs=10",  # 4 videos over 2 workers is 2 steps per epoch: max_steps ends the run, not epochs
        "train.checkpoint_every_steps=2",
        "eval.every_steps=1",  # periodic validation on rank 0 while rank 1 waits (every rank must report)
    ]
    import os

    os.environ["SEQFORMER_DEBUG_DIR"] = str(debug)
    cwd = os.getcwd()
    os.chdir(out)
    try:
        if ray.is_initialized():
            ray.shutdown()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20)
        code = main(["run", str(SMOKE), *overrides])
    finally:
        os.chdir(cwd)
        os.environ.pop("SEQFORMER_DEBUG_DIR", None)
        ray.shutdown()
    assert code == 0
    return out, debug


def test_ddp_ranks_end_with_identical_parameters(smoke_run):
    _, debug = smoke_run
    lines = [(debug / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert lines[0][0] == lines[1][0] == "3"  # both ranks did the same number of steps
    assert lines[0][1] == lines[1][1]  # and hold the same parameters


def test_outputs_exist(smoke_run):
    out, _ = smoke_run
    run_dir = out / "outputs" / "smoke_tiny_cpu"
    assert (run_dir / "model" / "checkpoint.pt").is_file() and (run_dir / "model" / "checkpoint.sha256").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert -1.0 <= metrics[key] <= 1.0
    assert isinstance(json.loads((run_dir / "results.json").read_text()), list)


def test_mlflow_holds_run_params_metrics_artifacts_and_champion(smoke_run):
    from mlflow.tracking import MlflowClient

    out, _ = smoke_run
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("seqformer-smoke")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "3" and run.data.params["resources.num_workers"] == "2"
    assert run.data.tags["git_sha"] and run.data.tags["version.torch"]
    assert "train/loss" in run.data.metrics and "val/AP" in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")][0] == 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "plots"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "config")} == {"config/resolved_config.yaml"}
    champion = client.get_model_version_by_alias("seqformer-smoke", "champion")
    assert str(champion.version) == "1" and champion.tags["run_id"] == run.info.run_id


def test_registered_model_loads_back(smoke_run, monkeypatch):
    import torch

    from seqformer.platform.model_source import load_model

    out, _ = smoke_run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    model, cfg = load_model("models:/seqformer-smoke@champion")
    assert cfg.hidden_dim == 32
    local, _ = load_model(out / "outputs" / "smoke_tiny_cpu" / "model")
    for (name, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), name


def test_registered_pyfunc_model_predicts_without_pickles(smoke_run, monkeypatch):
    """The MLflow model is 'models from code' + our weights-only checkpoint: it loads and predicts a video."""
    import mlflow
    import numpy as np
    from PIL import Image

    out, _ = smoke_run
    uri = f"sqlite:///{out / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/seqformer-smoke@champion")
    video = sorted((out / "data" / "val" / "JPEGImages").iterdir())[0]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(video.glob("*.jpg"))])
    (results,) = model.predict([frames])
    from seqformer.pipelines.inference import AssociationConfig
    from seqformer.platform.config.load import load_experiment
    from seqformer.platform.predictor import Predictor

    # the pyfunc runs the inference settings of the experiment that trained the model (windows included)
    evaluation = load_experiment(Path(__file__).parents[2] / "experiments" / "smoke" / "tiny_cpu.yaml").eval
    assert evaluation.window > 0  # inherited from the demo: the windowed path is what is compared
    association = AssociationConfig(nms_iou=evaluation.nms_iou, coverage_exponent=evaluation.coverage_exponent)
    expected = Predictor(out / "outputs" / "smoke_tiny_cpu" / "model", short_side=64, window=evaluation.window,
                         overlap=evaluation.window_overlap, association=association).predict_video(list(frames))
    assert len(results) <= 10
    assert [(r["category_id"], round(r["score"], 6), r["segmentations"]) for r in results] == [
        (r["category_id"], round(r["score"], 6), r["segmentations"]) for r in expected
    ]
