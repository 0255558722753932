"""`ray start --head` + `ray job submit` of the smoke experiment on 127.0.0.1, and a second local node that receives a
training worker. Everything is stopped afterwards.

The head starts with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which keeps every listener on 127.0.0.1. Ray refuses to
start a *worker* node under that setting ("multi-node clusters are not supported"), so the second node needs it set
to 1, and then not every listener of that node is pinned to loopback: the two-node test is marked ``slow`` and is not
part of CI; run it with ``pytest -m slow tests/e2e/test_ray_cluster.py`` on a machine where that is acceptable."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from seqformer.platform.demo import output_overrides

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.ray, pytest.mark.e2e]


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RAY_TMPDIR=str(tmp),
    )
    return env


def _ray(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _start_head(env: dict[str, str], ray_tmp: Path) -> tuple[int, int]:
    gcs, dashboard = _free_ports(2)
    head = _ray(["start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
                 "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                 "--memory=3000000000", "--object-store-memory=300000000", f"--temp-dir={ray_tmp}"], env)
    assert head.returncode == 0, head.stderr
    return gcs, dashboard


@pytest.fixture()
def head_node():
    ray_tmp = Path("/tmp") / f"sfr{os.getpid()}"  # short: Unix socket paths are limited to 107 bytes
    ray_tmp.mkdir(exist_ok=True)
    env = _env(ray_tmp)
    try:
        gcs, dashboard = _start_head(env, ray_tmp)
        yield env, gcs, f"http://127.0.0.1:{dashboard}"
    finally:
        _ray(["stop", "--force"], env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _add_worker_node(env: dict[str, str], gcs: int) -> None:
    node, obj, agent, metrics, runtime_env, min_w = _free_ports(6)
    second = _ray(["start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                   f"--node-manager-port={node}", f"--object-manager-port={obj}",
                   f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                   f"--runtime-env-agent-port={runtime_env}", f"--min-worker-port={min_w}",
                   f"--max-worker-port={min_w + 40}", "--memory=3000000000", "--object-store-memory=300000000"],
                  {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"})
    assert second.returncode == 0, second.stderr


def _submit_smoke(env: dict[str, str], address: str, tmp_path: Path, extra: list[str]) -> tuple[Path, Path]:
    out = tmp_path / "job"
    debug = tmp_path / "debug"
    overrides = [*output_overrides(out), "resources.num_workers=2", "train.max_steps=2", "train.epochs=10",
                 "tracking.registered_model_name=null", *extra]
    runtime_env = {"env_vars": {"RAY_AUTH_MODE": "disabled", "SEQFORMER_DEBUG_DIR": str(debug),
                                "SEQFORMER_KERNELS_DIR": os.environ.get("SEQFORMER_KERNELS_DIR", "")}}
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={address}", f"--working-dir={REPO}",
         f"--runtime-env-json={json.dumps(runtime_env)}", "--",
         sys.executable, "-m", "seqformer", "run", "experiments/smoke/tiny_cpu.yaml", *overrides],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout.lower(), job.stdout[-2000:]
    assert (out / "outputs" / "smoke_tiny_cpu" / "model" / "checkpoint.pt").is_file()
    return out, debug


def test_job_submit_of_an_experiment_completes(head_node, tmp_path):
    env, _, address = head_node
    _, debug = _submit_smoke(env, address, tmp_path, [])
    ranks = [(debug / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][:2] == ranks[1][:2]  # same step, same parameters on both workers


@pytest.mark.slow
def test_a_second_local_node_receives_a_training_worker(head_node, tmp_path):
    env, gcs, address = head_node
    _add_worker_node(env, gcs)
    _, debug = _submit_smoke(env, address, tmp_path, ["resources.placement_strategy=SPREAD"])
    ranks = [(debug / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][2] != ranks[1][2], "both training workers ran on the same node"
    assert ranks[0][1] == ranks[1][1]
