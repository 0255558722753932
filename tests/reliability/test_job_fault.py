"""Job fault: the whole `seqformer run` job (driver, its local Ray, the workers) is SIGKILLed once it has written two
checkpoints, and its newest checkpoint is then torn (cut to 100 bytes, as a crash mid-copy would leave it). Running
the same command again skips the torn checkpoint with a warning naming it and the one used, continues from the
previous good checkpoint, and continues the same MLflow run to the planned step."""

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

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.slow]  # two full `seqformer run` jobs: ~2-4 min

MAX_STEPS, CHECKPOINT_EVERY = 30, 3


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


def _kill_job_after_two_checkpoints(out: Path, timeout: float = 300.0) -> Path:
    """Start the job, wait for two checkpoints that verify, then SIGKILL the job's whole process tree."""
    storage = out / "ray_results" / RUN_NAME
    with open(out / "first_job.log", "w") as log:
        proc = subprocess.Popen(
            _command(out), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    tree: list[int] = []
    try:
        deadline = time.monotonic() + timeout
        while len(_verified_checkpoints(storage)) < 2:
            assert proc.poll() is None, (
                f"job ended (code {proc.returncode}) before its first checkpoint: "
                + (out / "first_job.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.2)
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
    storage = _kill_job_after_two_checkpoints(out)
    by_step = sorted((load_checkpoint(c)["step"], c) for c in _verified_checkpoints(storage))
    (torn_step, torn), (good_step, good) = by_step[-1], by_step[-2]
    target = torn / "checkpoint.pt"
    target.write_bytes(target.read_bytes()[:100])
    first_run = only_run(out)
    second = subprocess.run(
        _command(out), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=420, start_new_session=True
    )
    (out / "second_job.log").write_text(second.stdout + second.stderr)
    return out, {"torn": torn, "torn_step": torn_step, "good": good, "good_step": good_step}, first_run, second


def test_the_killed_job_left_a_running_mlflow_run_and_checkpoints(resumed_job):
    _, ckpt, first_run, _ = resumed_job
    assert first_run.info.status == "RUNNING"  # a SIGKILLed driver cannot close its run
    assert CHECKPOINT_EVERY <= ckpt["good_step"] < ckpt["torn_step"] < MAX_STEPS


def test_rerun_skips_the_torn_checkpoint_and_continues_from_the_previous_one(resumed_job):
    out, ckpt, _, second = resumed_job
    log = second.stdout + second.stderr
    assert second.returncode == 0, log[-4000:]
    assert "of an earlier job under" in log and "training continues from the newest good one" in log
    warnings = [line for line in log.splitlines() if "previous good one" in line]
    assert any(ckpt["torn"].name in line and ckpt["good"].name in line for line in warnings), warnings
    assert f"resuming from checkpoint at step {ckpt['good_step']}" in log
    started = [int(s) for s in re.findall(r"worker 0/\d+ training from step (\d+)", log)]
    assert started and started[0] == ckpt["good_step"] > 0  # not from scratch
    assert load_checkpoint(out / "outputs" / RUN_NAME / "model")["step"] == MAX_STEPS


def test_the_same_mlflow_run_is_continued_and_finished_with_every_step(resumed_job, observe):
    out, ckpt, first_run, _ = resumed_job
    run = only_run(out)
    steps = Counter(m.step for m in mlflow_client(out).get_metric_history(run.info.run_id, "train/loss"))
    twice = sorted(s for s, n in steps.items() if n > 1)
    same = "same" if run.info.run_id == first_run.info.run_id else "a new"
    observe(
        "fault/job-sigkill",
        f"killed after the step-{ckpt['torn_step']} checkpoint, which was then torn; re-run warned and resumed at "
        f"step {ckpt['good_step']}; {same} MLflow run, {run.info.status}; `train/loss` steps {min(steps)}-"
        f"{max(steps)}, logged twice: {twice}",
    )
    assert run.info.run_id == first_run.info.run_id and run.info.status == "FINISHED"
    assert sorted(steps) == list(range(1, MAX_STEPS + 1)), f"missing or extra steps: {sorted(steps)}"
    # Only steps trained after the checkpoint resumed from and before the kill can appear twice.
    assert all(n == 1 for s, n in steps.items() if s <= ckpt["good_step"]), dict(steps)
    assert all(n <= 2 for n in steps.values()), dict(steps)
