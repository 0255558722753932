"""Worker fault: one Ray Train worker is SIGKILLed mid-run; the worker group restarts from the latest checkpoint.

The kill comes from the training loop's test hook (``SEQFORMER_FAULT_INJECT=kill_after_step=3``, see
``seqformer.platform.train_loop.inject_fault``): after optimiser step 3 is done and logged, rank 0 kills its own
process, as a lost node would. Checkpoints are written every 2 steps, so Ray Train must restart the worker group
from the step-2 checkpoint (``train.max_failures=2``) and the run must still end at step 6 with one MLflow run whose
``train/loss`` history has every step once, except the steps redone since that checkpoint (step 3).
"""

from __future__ import annotations

from collections import Counter

import pytest

from seqformer.platform.cli import main
from seqformer.platform.train_loop import FAULT_ENV
from tests.reliability.ray_helpers import RUN_NAME, SMOKE, fault_overrides, mlflow_client, only_run

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

MAX_STEPS, CHECKPOINT_EVERY, KILL_AFTER = 6, 2, 3


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory):
    import ray

    out = tmp_path_factory.mktemp("worker_fault")
    if ray.is_initialized():
        ray.shutdown()
    # Workers see the hook through the runtime environment (what `ray job submit --runtime-env-json` would pass).
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=512 * 2**20,
        runtime_env={"env_vars": {FAULT_ENV: f"kill_after_step={KILL_AFTER}"}},
    )
    try:
        code = main(["run", str(SMOKE), *fault_overrides(out, MAX_STEPS, CHECKPOINT_EVERY)])
    finally:
        ray.shutdown()
    return out, code


def test_the_fault_fired_and_the_run_still_succeeded(faulted_run):
    out, code = faulted_run
    assert (out / "ray_results" / RUN_NAME / f".fault_injected_after_step_{KILL_AFTER}").is_file()
    assert code == 0


def test_final_checkpoint_has_the_planned_step_count(faulted_run):
    from seqformer.platform.checkpoint import load_checkpoint

    out, _ = faulted_run
    payload = load_checkpoint(out / "outputs" / RUN_NAME / "model")
    assert payload["step"] == MAX_STEPS


def test_mlflow_history_is_continuous_with_only_the_redone_steps_twice(faulted_run, observe):
    from seqformer.platform.checkpoint import load_checkpoint

    out, _ = faulted_run
    run = only_run(out)
    final = load_checkpoint(out / "outputs" / RUN_NAME / "model")["step"]
    steps = [m.step for m in mlflow_client(out).get_metric_history(run.info.run_id, "train/loss")]
    counts = Counter(steps)
    twice = sorted(s for s, n in counts.items() if n > 1)
    observe(
        "fault/worker-sigkill",
        f"killed after step {KILL_AFTER}; restarted, final checkpoint step {final}; one MLflow run, {run.info.status}; "
        f"`train/loss` steps {min(counts)}-{max(counts)}, logged twice: {twice}",
    )
    assert run.info.status == "FINISHED"
    assert sorted(counts) == list(range(1, MAX_STEPS + 1)), f"missing or extra steps: {sorted(counts)}"
    last_checkpoint = (KILL_AFTER // CHECKPOINT_EVERY) * CHECKPOINT_EVERY
    redone = {s for s, n in counts.items() if n > 1}
    # Steps after the last checkpoint before the kill are trained (and logged) again; nothing else is duplicated.
    assert redone == set(range(last_checkpoint + 1, KILL_AFTER + 1)), f"step counts: {dict(counts)}"
    assert all(n <= 2 for n in counts.values())
