"""Shared pieces of the fault tests: the smoke experiment's overrides, a local Ray, and process-tree clean-up."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from seqformer.platform.demo import output_overrides

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke" / "tiny_cpu.yaml"
RUN_NAME = "smoke_tiny_cpu"


def fault_overrides(out: Path, max_steps: int, checkpoint_every: int) -> list[str]:
    """The smoke experiment under ``out``: reference kernel (no compile), several epochs so ``max_steps`` is what
    stops it, a metric line every step, no validation and no registry (the faults are in training)."""
    return [
        *output_overrides(out),
        "model.msda_backend=reference",
        "model.backbone=resnet18",
        f"train.max_steps={max_steps}",
        "train.epochs=50",
        f"train.checkpoint_every_steps={checkpoint_every}",
        "train.keep_checkpoints=10",
        "train.max_failures=2",
        "train.log_every_s=0.001",
        "eval.enabled=false",
        "tracking.registered_model_name=null",
    ]


def mlflow_client(out: Path) -> Any:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{out / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def only_run(out: Path, experiment: str = "seqformer-smoke") -> Any:
    """The single MLflow run of the smoke experiment under ``out`` (fails if there are several)."""
    client = mlflow_client(out)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {out / 'mlflow.db'}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, f"expected one MLflow run (continued, not duplicated), found {len(runs)}"
    return runs[0]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state, past the "(comm)" field


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grand-children, ...), from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_pids(pids: list[int], timeout: float = 20.0) -> None:
    """SIGKILL the given processes (only those; never by name) and wait until they are gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)


def listening_addresses(pids: list[int]) -> dict[int, list[str]]:
    """``pid -> ["ip:port", ...]`` of the TCP sockets in LISTEN state each process holds (from /proc/net)."""
    import ipaddress
    import socket

    listening: dict[str, str] = {}  # socket inode -> "ip:port"
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            if family == socket.AF_INET:
                ip = str(ipaddress.IPv4Address(raw[::-1]))
            else:  # four little-endian 32-bit words; an IPv4-mapped address is shown as IPv4
                address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                ip = str(address.ipv4_mapped or address)
            listening[fields[9]] = f"{ip}:{int(hex_port, 16)}"
    result: dict[int, list[str]] = {}
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes = [link[8:-1] for link in links if link.startswith("socket:[")]
        found = sorted(listening[i] for i in inodes if i in listening)
        if found:
            result[pid] = found
    return result
