"""The registry of every reliability case: faults (their own test modules) and the bad-input corpus."""

from __future__ import annotations

from dataclasses import dataclass

from tests.reliability import cases_config, cases_data, cases_media

ALL_CASES = [*cases_media.CASES, *cases_data.CASES, *cases_config.CASES]


@dataclass(frozen=True)
class Scenario:
    """A fault injected by a fault test (``test_worker_fault.py``, ``test_job_fault.py``) or a security default
    checked by ``test_security.py``."""

    id: str
    given: str
    expected: str


FAULT_CASES = [
    Scenario(
        "fault/worker-sigkill",
        "one Ray Train worker SIGKILLed right after step 3 (checkpoints every 2 steps, `train.max_failures=2`)",
        "the worker group restarts from the step-2 checkpoint; the run ends at step 6; one FINISHED MLflow run whose "
        "`train/loss` has steps 1-6, only step 3 twice",
    ),
    Scenario(
        "fault/job-sigkill",
        "the whole `seqformer run` job (driver, local Ray, workers) SIGKILLed after two checkpoints; the newest "
        "checkpoint then cut to 100 bytes; the same command run again",
        "the torn checkpoint is skipped with a warning naming it and the one used; training continues from the "
        "previous good checkpoint (not step 1) to the planned step; the same MLflow run continues and ends FINISHED "
        "with every step, only the steps redone after that checkpoint twice",
    ),
]

SECURITY_CASES = [
    Scenario(
        "security/ray-loopback",
        "a local Ray started by the platform (`init_ray`, as `seqformer run` does) from an environment without "
        "`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` / `RAY_AUTH_MODE`",
        "every node address and every listening TCP socket of the Ray processes (GCS, raylet, dashboard head, "
        "agents, workers) is on 127.0.0.1",
    ),
    Scenario(
        "security/mlflow-ui-loopback",
        "the MLflow UI command `seqformer demo` prints",
        "`mlflow ui ... --host 127.0.0.1`",
    ),
    Scenario(
        "security/secrets-redacted",
        "an experiment whose tracking URI, `train.init_checkpoint` and `data.root` carry passwords "
        "(`scheme://user:password@host`)",
        "params, tags and the resolved-config artifact of the MLflow run show `user:***@`; no password anywhere",
    ),
    Scenario(
        "security/secrets-in-checkpoint",
        "the same experiment's training checkpoint (logged and registered as the MLflow model)",
        "the config stored in the checkpoint shows `user:***@`; only tensors and plain containers",
    ),
]
