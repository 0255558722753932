"""A local two-node Ray cluster on 127.0.0.1: `ray job submit` of the smoke experiment runs, and the training
workers (placement SPREAD) land on both nodes. Everything listens on loopback and is stopped afterwards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
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


@pytest.fixture()
def two_node_cluster(tmp_path):
    ray_tmp = Path("/tmp") / f"sfr{os.getpid()}"  # short: Unix socket paths are limited to 107 bytes
    ray_tmp.mkdir(exist_ok=True)
    env = _env(ray_tmp)
    gcs, dashboard, *worker_ports = _free_ports(9)
    head = _ray(["start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=1",
                 "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                 "--memory=3000000000", "--object-store-memory=300000000", f"--temp-dir={ray_tmp}"], env)
    assert head.returncode == 0, head.stderr
    node, obj, agent, metrics, runtime_env, min_w = worker_ports[:6]
    second = _ray(["start", f"--address=127.0.0.1:{gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                   f"--node-manager-port={node}", f"--object-manager-port={obj}",
                   f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
                   f"--runtime-env-agent-port={runtime_env}", f"--min-worker-port={min_w}",
                   f"--max-worker-port={min_w + 40}", "--memory=3000000000", "--object-store-memory=300000000"],
                  env)
    try:
        assert second.returncode == 0, second.stderr
        yield env, f"http://127.0.0.1:{dashboard}"
    finally:
        _ray(["stop", "--force"], env, timeout=120)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_job_submit_runs_on_two_nodes(two_node_cluster, tmp_path):
    env, address = two_node_cluster
    out = tmp_path / "job"
    debug = tmp_path / "debug"
    overrides = [*output_overrides(out), "resources.num_workers=2", "resources.placement_strategy=SPREAD",
                 "train.max_steps=2", "tracking.registered_model_name=null"]
    runtime_env = {"env_vars": {"RAY_AUTH_MODE": "disabled", "SEQFORMER_DEBUG_DIR": str(debug),
                                "SEQFORMER_KERNELS_DIR": os.environ.get("SEQFORMER_KERNELS_DIR", "")}}
    started = time.monotonic()
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", f"--address={address}", f"--working-dir={REPO}",
         f"--runtime-env-json={json.dumps(runtime_env)}", "--",
         sys.executable, "-m", "seqformer", "run", "experiments/smoke/tiny_cpu.yaml", *overrides],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout.lower(), job.stdout[-2000:]
    assert (out / "outputs" / "smoke_tiny_cpu" / "model" / "checkpoint.pt").is_file()
    ranks = [(debug / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert ranks[0][2] != ranks[1][2], "both training workers ran on the same node"
    assert ranks[0][1] == ranks[1][1]
    assert time.monotonic() - started < 900
