"""Security defaults: loopback-only local Ray and MLflow UI, and no secrets in what a run logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.reliability.ray_helpers import REPO

SECRETS = ("s3cret-pw", "t0ken-pw", "k3y-pw")
SECRET_CONFIG = {
    "name": "secret_case",
    "model": {
        "backbone": "resnet18",
        "frozen_batch_norm": False,
        "freeze_stem": False,
        "hidden_dim": 32,
        "dim_feedforward": 64,
        "enc_layers": 1,
        "dec_layers": 1,
        "nheads": 4,
        "num_queries": 4,
        "num_classes": 3,
        "num_frames": 2,
        "msda_backend": "reference",
    },
    "train": {"init_checkpoint": "https://bob:t0ken-pw@models.example/seqformer.pth"},
    "data": {"root": "https://carol:k3y-pw@data.example/ytvis"},
    "tracking": {"tracking_uri": "http://alice:s3cret-pw@mlflow.example:5000", "experiment_name": "secret-case"},
}

_RAY_PROBE = """
import json, os, sys
sys.path.insert(0, {repo!r})
from seqformer.platform.ray_env import init_ray
init_ray(num_cpus=1, object_store_mb=128)
import ray
from tests.reliability.ray_helpers import descendants, listening_addresses
pids = [os.getpid(), *descendants(os.getpid())]
worker_nice = ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote())
print(json.dumps({{"nodes": [n["NodeManagerAddress"] for n in ray.nodes()],
                  "listening": listening_addresses(pids), "worker_nice": worker_nice}}))
ray.shutdown()
"""


@pytest.fixture(scope="module")
def local_ray_probe() -> dict:
    """What a Ray started by the platform (`init_ray`, as `seqformer run` does) looks like from inside, in a child
    process whose environment did not ask for loopback or auth settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_PROBE.format(repo=str(REPO))],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.ray
def test_local_ray_listens_on_loopback_only(local_ray_probe, observe):
    """A Ray started by the platform binds every listener to 127.0.0.1, its dashboard head included, even when the
    caller's environment did not ask for it."""
    seen = local_ray_probe
    addresses = sorted({a for found in seen["listening"].values() for a in found})
    observe(
        "security/ray-loopback",
        f"nodes {seen['nodes']}; {len(addresses)} listening sockets, hosts "
        f"{sorted({a.rsplit(':', 1)[0] for a in addresses})}",
    )
    assert seen["nodes"] and set(seen["nodes"]) == {"127.0.0.1"}
    assert addresses, "found no listening sockets of the local Ray (the probe is broken)"
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "::1") for a in addresses), addresses


@pytest.mark.ray
def test_local_ray_workers_run_at_default_niceness(local_ray_probe):
    """Ray renices workers to 15 by default; a local Ray of the platform keeps them at 0 (they do the job's work)."""
    assert local_ray_probe["worker_nice"] == 0


def test_demo_prints_an_mlflow_ui_command_bound_to_loopback(tmp_path, monkeypatch, observe):
    """The MLflow UI command `seqformer demo` prints binds 127.0.0.1 (the heavy phases are stubbed out here; the
    e2e demo test runs them)."""
    from seqformer.platform import data, demo, driver, pipeline

    monkeypatch.setattr(data, "ensure_synthetic", lambda exp: None)
    monkeypatch.setattr(data, "prepare_experiment", lambda exp: {"records": 0, "skipped": []})
    monkeypatch.setattr(driver, "train_experiment", lambda exp: driver.TrainOutcome({}, None, None))
    monkeypatch.setattr(pipeline, "evaluate_trained", lambda exp, out: {"metrics": {}})
    command = demo.run_demo(tmp_path, infer=False)["mlflow_ui"].split()
    observe("security/mlflow-ui-loopback", " ".join(command).replace(str(tmp_path), "<tmp>"))
    assert command[:2] == ["mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"


def _open_tracking_with_secrets(tmp_path: Path, monkeypatch) -> tuple[object, str]:
    """`driver.open_tracking` for an experiment whose URIs carry passwords; the password-protected tracking server is
    stood in for by a local SQLite store (only the URI resolution is redirected)."""
    from seqformer.platform import driver
    from seqformer.platform.config import validate

    exp = validate(
        {
            **SECRET_CONFIG,
            "resources": {"storage_path": str(tmp_path / "storage")},
            "tracking": {**SECRET_CONFIG["tracking"], "artifact_location": str(tmp_path / "artifacts")},
        }
    )
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(driver, "resolve_tracking_uri", lambda configured: local)
    tracking = driver.open_tracking(exp)
    assert tracking is not None
    return tracking


def test_no_secret_in_logged_params_tags_or_resolved_config(tmp_path, monkeypatch, observe):
    tracker, run_id = _open_tracking_with_secrets(tmp_path, monkeypatch)
    run = tracker.client.get_run(run_id)
    config = Path(tracker.client.download_artifacts(run_id, "config/resolved_config.yaml", str(tmp_path))).read_text()
    logged = {"params": json.dumps(run.data.params), "tags": json.dumps(run.data.tags), "resolved config": config}
    leaks = [where for where, text in logged.items() if any(s in text for s in SECRETS)]
    observe(
        "security/secrets-redacted",
        f"tracking_uri param {run.data.params['tracking.tracking_uri']!r}; secrets found in: {leaks or 'nothing'}",
    )
    assert run.data.params["tracking.tracking_uri"] == "http://alice:***@mlflow.example:5000"
    assert run.data.params["train.init_checkpoint"] == "https://bob:***@models.example/seqformer.pth"
    assert "http://alice:***@mlflow.example:5000" in config  # redacted, not dropped
    assert not leaks, f"a password reached the run's {leaks}"


def test_no_secret_in_the_checkpoint_that_becomes_the_registered_model(observe):
    """The training checkpoint (logged to MLflow and registered as the model) carries the resolved config."""
    from seqformer.model import build_model
    from seqformer.platform.config import validate
    from seqformer.platform.train_loop import TrainState, build_optimizer, build_scheduler, checkpoint_payload

    exp = validate(SECRET_CONFIG)
    model = build_model(exp.model)
    optimizer = build_optimizer(model, exp)
    payload = checkpoint_payload(model, optimizer, build_scheduler(optimizer, exp), TrainState(), exp)
    text = json.dumps(payload["experiment"])
    leaks = [s for s in SECRETS if s in text]
    observe(
        "security/secrets-in-checkpoint",
        f"experiment.tracking.tracking_uri in the checkpoint: {payload['experiment']['tracking']['tracking_uri']!r}",
    )
    assert not leaks
    assert payload["experiment"]["tracking"]["tracking_uri"] == "http://alice:***@mlflow.example:5000"
    assert isinstance(payload["model"], dict) and all(torch.is_tensor(v) for v in payload["model"].values())
