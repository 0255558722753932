"""Ray Data wiring (the only pipelines module that imports Ray): the prepare executor and the training dataset.

* :func:`ray_executor` streams windows of videos (references into prepare's spill file) through
  ``ray.data.from_items(...).map(build)`` with the order preserved, so the driver appends each window's records to
  the current shard as they arrive while decoding runs on every CPU of the cluster. A window is a bounded number of
  frames and the bytes in flight are capped, so memory does not grow with the dataset.
* :func:`training_dataset` reads the shards a manifest lists into a ``ray.data.Dataset`` of records; the driver hands
  it to ``TorchTrainer(datasets={"train": ds})`` so Ray splits it across workers. Deterministic decoding happened in
  ``prepare``; random clip sampling and augmentation run per worker after reading (``collate.iter_clip_batches``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from seqformer.pipelines.clip_records import shard_paths
from seqformer.pipelines.prepare import Executor, PrepareOptions, WindowResult, build_window

logger = logging.getLogger(__name__)

LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep every listener of a local Ray on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}

LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}
"""Ray renices its worker processes to 15 by default, so that on a busy node the head's control plane wins over
them. In a Ray started here the workers *are* the job (decoding, training): at niceness 15 they lose every
contention with unrelated processes of the machine, and ``prepare`` on two busy CPUs ran at 30% of the JPEG-decode
bound (``benchmarks/prepare.py``). A cluster keeps its own setting."""


def ensure_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Connect to ``$RAY_ADDRESS`` if set, else start a local loopback-only Ray; no-op when already connected."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False)
        return
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    logger.info("starting a local Ray (num_cpus=%s, loopback only)", num_cpus)
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        object_store_memory=object_store_memory,
        log_to_driver=False,
        _system_config=LOCAL_SYSTEM_CONFIG,
    )


def _quiet_data_context(preserve_order: bool) -> None:
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = preserve_order
    ctx.enable_progress_bars = False


def ray_executor(
    options: PrepareOptions,
    *,
    max_in_flight_mib: int | None = None,
    max_batch_windows: int = 1024,
    plan_ahead_s: float = 1.0,
) -> Executor:
    """A prepare executor that builds records on Ray Data workers (one window per task), yielding in input order.

    The input is the list of window references (a few integers each; the descriptors stay in the spill file until
    a worker reads them). Each task returns its window's records as one Arrow IPC stream, so the driver only maps the
    buffer and appends it to the Parquet shard: no Python objects per record in the driver.

    Args:
        options: record settings passed to ``prepare.build_window``.
        max_in_flight_mib: cap on the object-store bytes Ray Data may hold for this job (finished windows waiting
            for the driver plus inputs). Default: 64 MiB per cluster CPU, at least 128 MiB. This is what keeps the
            memory flat when the workers outpace the driver: without it, finished windows could pile up to Ray
            Data's default budget (a fraction of the whole object store).
        max_batch_windows: most windows per Ray Data dataset.
        plan_ahead_s: how long the driver may plan windows before the first dataset starts. Planning is cheap
            (byte ranges of the spill file: ~50 ms for 100 videos of 10-30 frames), so small and medium jobs are
            planned whole and run as *one* dataset; each further dataset costs a start (0.5-1 s on two cores) and a
            drain where workers idle. Jobs that do not fit in the budget start with what was planned; the driver
            plans eight more windows per finished one meanwhile and the next dataset takes them.

    Ray Data's per-operator resource reservation is switched off for the run (and restored after): with it on,
    Ray Data 2.60 kept about one ``build`` task running at a time on a 2-CPU node (task timestamps: tasks ran
    back to back on one worker while the other idled; 28% of the machine idle), ~330 frames/s at 100 videos of
    720p frames; with it off both workers stay busy (~440 frames/s, within a few % of the JPEG decode bound).
    The global budget (``resource_limits``: CPUs and the object-store cap) still bounds the run, so memory stays
    flat.
    """

    def build(row: dict[str, Any]) -> dict[str, Any]:
        table, outcome = build_window(row["item"], options)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return {"position": row["position"], "outcome": json.dumps(outcome), "records": sink.getvalue().to_pybytes()}

    def run(items: Iterable[dict[str, Any]]) -> Iterator[tuple[int, WindowResult]]:
        source = iter(items)
        ctx = ray.data.DataContext.get_current()
        saved = (
            ctx.execution_options.preserve_order,
            ctx.execution_options.resource_limits,
            ctx.enable_progress_bars,
            ctx.op_resource_reservation_enabled,
        )
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        cap = (max_in_flight_mib or max(128, 64 * cpus)) * 2**20
        pending: list[dict[str, Any]] = []

        def pull(count: int) -> bool:
            """Plan up to ``count`` more windows (prepare plans lazily); False once the input is exhausted."""
            for _ in range(count):
                item = next(source, None)
                if item is None:
                    return False
                pending.append(item)
            return True

        def plan_ahead() -> bool:
            """Plan for up to ``plan_ahead_s`` (at least ``2 * cpus`` windows, at most a full dataset)."""
            deadline = time.monotonic() + plan_ahead_s
            more = pull(2 * cpus)
            while more and len(pending) < max_batch_windows and time.monotonic() < deadline:
                more = pull(min(16, max_batch_windows - len(pending)))
            return more

        try:
            ctx.execution_options.preserve_order = True
            # the CPU limit must be explicit: with only a memory cap (or none), Ray Data 2.60's resource-budget
            # back-pressure ran one map task at a time on a 2-CPU cluster ("backpressured: tasks(ResourceBudget)")
            ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=cpus, object_store_memory=cap)
            ctx.enable_progress_bars = False
            ctx.op_resource_reservation_enabled = False
            more = plan_ahead()
            position = 0
            while pending:
                # one Ray Data dataset per batch of planned windows; while it runs, the driver plans the next batch
                batch, pending[:] = pending[:max_batch_windows], pending[max_batch_windows:]
                rows = [{"position": position + i, "item": item} for i, item in enumerate(batch)]
                position += len(batch)
                dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map(build, num_cpus=1)
                for row in dataset.iter_rows():
                    if more:
                        more = pull(8)
                    table = pa.ipc.open_stream(pa.py_buffer(row["records"])).read_all()
                    yield int(row["position"]), (table, json.loads(row["outcome"]))
                if more and not pending:
                    more = plan_ahead()
        finally:
            ctx.execution_options.preserve_order, ctx.execution_options.resource_limits = saved[:2]
            ctx.enable_progress_bars, ctx.op_resource_reservation_enabled = saved[2:]

    return run


def _row_groups(path: str) -> int:
    return int(pq.ParquetFile(path).num_row_groups)


def training_dataset(
    prepared_dir: str | Path,
    *,
    datasets: tuple[str, ...] | None = None,
    shuffle_seed: int | None = None,
    min_instances: int = 1,
) -> ray.data.Dataset:
    """A Ray Dataset of the clip records of a prepared folder (only the shards its manifest lists).

    Args:
        prepared_dir: output of ``seqformer prepare``.
        datasets: keep only these record kinds (``("ytvis",)``, ``("ytvis", "coco")``); ``None`` keeps all.
        shuffle_seed: when set, the shard order is randomised with this seed; per-record
            randomness comes from ``collate.iter_clip_batches``'s seed, not from the order.
        min_instances: records with fewer instances are dropped (a clip needs at least one target).

    Returns:
        Rows are dicts with the keys of ``clip_records.RECORD_SCHEMA`` (python lists / bytes / str).

    Raises:
        FileNotFoundError: ``prepared_dir`` has no manifest (not prepared, or preparation did not finish).
        ValueError: the manifest lists no records of the requested datasets.
    """
    paths = shard_paths(prepared_dir, datasets)
    if not paths:
        raise ValueError(
            f"{prepared_dir}: the manifest lists no records for datasets={datasets}; check prepare's output"
        )
    _quiet_data_context(preserve_order=False)
    if shuffle_seed is not None:
        paths = [paths[i] for i in np.random.default_rng(shuffle_seed).permutation(len(paths))]
    # One item per row group, read by zero-CPU tasks: reading is I/O (frames stay JPEG-encoded until a training
    # worker samples them), and Ray Train workers may hold every CPU of the cluster; ``read_parquet`` schedules a
    # one-CPU file-listing task first, which would then never run and the training loop would wait forever.
    units = [{"path": path, "row_group": group} for path in paths for group in range(_row_groups(path))]
    dataset = ray.data.from_items(units, override_num_blocks=max(1, len(units)))

    def read_unit(unit: dict[str, Any]) -> list[dict[str, Any]]:
        rows = pq.ParquetFile(unit["path"]).read_row_group(int(unit["row_group"])).to_pylist()
        return [row for row in rows if row["num_instances"] >= min_instances]

    dataset = dataset.flat_map(read_unit, num_cpus=0)
    return dataset
