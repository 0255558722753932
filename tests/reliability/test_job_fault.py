"""Job fault: the whole `seqformer run` job (driver, its local Ray, the workers) is SIGKILLed after its first
checkpoint; running the same command again continues from the newest verified checkpoint and the same MLflow run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from seqformer.platform.checkpoint import CheckpointError, load_checkpoint, verify_checkpoint
from seqformer.platform.train_loop import FAULT_ENV
from tests.reliability.ray_helpers import (
    REPO,
    RUN_NAME,
    SMOKE,
    descendants,
    fault_overrides,
    kill_pids,
    mlflow_client,
    only_run,
)

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

MAX_STEPS, CHECKPOINT_EVERY = 8, 2


def _verified_checkpoints(root: Path) -> list[Path]:
    good = []
    for folder in sorted(root.glob("checkpoint_*")):
        try:
            verify_checkpoint(folder)
        except CheckpointError:
            continue
        good.append(folder)
    return good


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "seqformer", "run", str(SMOKE), *fault_overrides(out, MAX_STEPS, CHECKPOINT_EVERY)]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", FAULT_ENV, "MLFLOW_TRACKING_URI")}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    return env


def _kill_job_after_first_checkpoint(out: Path, timeout: float = 300.0) -> Path:
    """Start the job, wait for a checkpoint that verifies, then SIGKILL the job's whole process tree."""
    storage = out / "ray_results" / RUN_NAME
    with open(out / "first_job.log", "w") as log:
        proc = subprocess.Popen(
            _command(out), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    tree: list[int] = []
    try:
        deadline = time.monotonic() + timeout
        while not _verified_checkpoints(storage):
            assert proc.poll() is None, (
                f"job ended (code {proc.returncode}) before its first checkpoint: "
                + (out / "first_job.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.5)
        tree = [proc.pid, *descendants(proc.pid)]
        assert proc.poll() is None, "the job finished before it could be killed; raise MAX_STEPS"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver's process group ...
    finally:
        kill_pids(tree or [proc.pid, *descendants(proc.pid)])  # ... and its local Ray (raylet, GCS, workers)
        proc.wait(timeout=30)
    return storage


@pytest.fixture(scope="module")
def resumed_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job_fault")
    storage = _kill_job_after_first_checkpoint(out)
    killed_at = max(load_checkpoint(c)["step"] for c in _verified_checkpoints(storage))
    first_run = only_run(out)
    second = subprocess.run(
        _command(out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=420, start_new_session=True
    )
    (out / "second_job.log").write_text(second.stdout + second.stderr)
    return out, killed_at, first_run, second


def test_the_killed_job_left_a_running_mlflow_run_and_a_checkpoint(resumed_job):
    _, killed_at, first_run, _ = resumed_job
    assert first_run.info.status == "RUNNING"  # a SIGKILLed driver cannot close its run
    assert CHECKPOINT_EVERY <= killed_at < MAX_STEPS


def test_rerun_continues_from_the_newest_checkpoint_to_the_planned_step(resumed_job):
    out, killed_at, _, second = resumed_job
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "training continues from it" in log
    assert f"resuming from checkpoint at step {killed_at}" in log
    started = [int(s) for s in re.findall(r"worker 0/\d+ training from step (\d+)", log)]
    assert started and started[0] == killed_at > 0  # not from scratch
    assert load_checkpoint(out / "outputs" / RUN_NAME / "model")["step"] == MAX_STEPS


def test_the_same_mlflow_run_is_continued_and_finished_with_every_step(resumed_job, observe):
    out, killed_at, first_run, _ = resumed_job
    run = only_run(out)
    steps = Counter(m.step for m in mlflow_client(out).get_metric_history(run.info.run_id, "train/loss"))
    same = "same" if run.info.run_id == first_run.info.run_id else "a new"
    observe(
        "fault/job-sigkill",
        f"killed with a step-{killed_at} checkpoint; re-run resumed at step {killed_at}, "
        f"{same} MLflow run, {run.info.status}; `train/loss` step counts {dict(sorted(steps.items()))}",
    )
    assert run.info.run_id == first_run.info.run_id and run.info.status == "FINISHED"
    assert sorted(steps) == list(range(1, MAX_STEPS + 1)), f"missing or extra steps: {sorted(steps)}"
    # Only steps trained after the newest checkpoint and before the kill can appear twice.
    assert all(n == 1 for s, n in steps.items() if s <= killed_at), dict(steps)
    assert all(n <= 2 for n in steps.values()), dict(steps)
