"""``seqformer prepare``: YouTube-VIS / COCO sources → sharded Parquet clip records + ``manifest.json``.

Plan (driver): read and validate the annotation JSONs, turn them into per-video descriptors, group consecutive
descriptors into shards of at most ``shard_size`` planned records, and fingerprint each shard (config hash +
the shard's annotations + size/mtime of each frame file). A shard whose committed file already carries the same
fingerprint is reused (incremental re-runs, also after a crash: shards are renamed into place only when complete).

Build: the pending descriptors stream through Ray Data (``ray_data.stream_records``; one video per task item,
order preserved) or, with ``executor="local"``, through a plain loop; the driver appends the records to the current
shard's :class:`~seqformer.pipelines.clip_records.ShardWriter` (one row group in memory), commits each shard
atomically and finally writes the manifest atomically. Files not listed in the manifest are removed at the end;
readers ignore anything the manifest does not list.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from seqformer.pipelines.clip_records import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    ShardWriter,
    SkipVideo,
    build_records,
    planned_records,
    shard_metadata,
    write_json_atomic,
)
from seqformer.pipelines.coco import load_coco
from seqformer.pipelines.ytvis import file_sha256, iter_frame_stats, load_ytvis

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """One input dataset."""

    dataset: Literal["ytvis", "coco"]
    """``ytvis`` (YouTube-VIS 2019/2021 layout) or ``coco`` (COCO 2017 layout, one-frame records)."""
    annotations: str
    """Instances JSON."""
    root: str
    """YouTube-VIS root (frames under ``root/JPEGImages/``) or the COCO image folder (``train2017/``)."""
    category_map: str | dict[int, int] = "ytvis19"
    """COCO only: ``ytvis19`` (official joint-training map), ``identity``, or an explicit ``{coco_id: id}``."""


@dataclass(frozen=True)
class PrepareOptions:
    """How records are built and sharded."""

    max_size: int = 768
    """Frames are stored with the longer side ``<= max_size``."""
    jpeg_quality: int = 95
    """Quality of frames that had to be re-encoded."""
    num_frames: int | None = None
    """When set, records hold at most this many consecutive frames (long videos become several records)."""
    shard_size: int = 256
    """Most clip records per Parquet shard."""
    row_group_size: int = 8
    """Records per Parquet row group (bounds the writer's memory)."""

    def record_hash(self) -> str:
        """Hash of everything that changes record content (not sharding)."""
        keys = {
            "format": FORMAT_VERSION,
            "max_size": self.max_size,
            "jpeg_quality": self.jpeg_quality,
            "num_frames": self.num_frames,
        }
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


@dataclass
class _ShardPlan:
    dataset: str
    index: int
    descriptors: list[dict[str, Any]]
    fingerprint: str
    file: str
    meta: dict[str, Any] | None = None
    reused: bool = False


@dataclass
class _ShardStats:
    records: int = 0
    frames: int = 0
    instances: int = 0
    videos: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    category_counts: dict[str, int] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        self.records += 1
        self.frames += len(record["frames"])
        self.instances += record["num_instances"]
        for inst in record["instances"]:
            key = str(inst["category_id"])
            self.category_counts[key] = self.category_counts.get(key, 0) + 1


Executor = Callable[[list[str]], Iterator[tuple[int, list[dict[str, Any]] | str]]]
"""Takes descriptors as JSON strings; yields ``(position, records or skip reason)`` in input order."""


def build_item(descriptor_json: str, options: PrepareOptions) -> list[dict[str, Any]] | str:
    """Records of one descriptor, or the skip reason (runs on Ray Data workers or in the local loop)."""
    descriptor = json.loads(descriptor_json)
    try:
        return build_records(
            descriptor, max_size=options.max_size, jpeg_quality=options.jpeg_quality, num_frames=options.num_frames
        )
    except SkipVideo as err:
        return str(err)


def local_executor(options: PrepareOptions) -> Executor:
    """A plain single-process loop (the baseline of ``benchmarks/prepare.py`` and Ray-free tests)."""

    def run(items: list[str]) -> Iterator[tuple[int, list[dict[str, Any]] | str]]:
        for position, item in enumerate(items):
            yield position, build_item(item, options)

    return run


def _load_source(
    source: Source,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    if source.dataset == "ytvis":
        descriptors, skipped, categories = load_ytvis(source.annotations, source.root, dataset="ytvis")
        filtered: dict[str, int] = {}
    elif source.dataset == "coco":
        descriptors, filtered = load_coco(source.annotations, source.root, category_map=source.category_map)
        skipped, categories = [], []
    else:
        raise ValueError(f"Source.dataset must be 'ytvis' or 'coco', got {source.dataset!r}")
    info = {
        "dataset": source.dataset,
        "annotations": str(source.annotations),
        "root": str(source.root),
        "annotations_sha256": file_sha256(source.annotations),
        "items": len(descriptors),
        "filtered": filtered,
    }
    return descriptors, skipped, categories, info


def _plan_shards(
    dataset: str, descriptors: list[dict[str, Any]], options: PrepareOptions, out: Path
) -> list[_ShardPlan]:
    groups: list[list[dict[str, Any]]] = []
    count = 0
    for desc in descriptors:
        planned = planned_records(desc, options.num_frames)
        if not groups or count + planned > options.shard_size:
            groups.append([])
            count = 0
        groups[-1].append(desc)
        count += planned
    plans = []
    for index, group in enumerate(groups):
        digest = hashlib.sha256(options.record_hash().encode())
        for desc in group:
            digest.update(json.dumps(desc, sort_keys=True).encode())
            digest.update(json.dumps(list(iter_frame_stats(desc))).encode())
        fingerprint = digest.hexdigest()
        name = f"{dataset}-{index:05d}-{fingerprint[:16]}.parquet"
        meta = shard_metadata(out / name) if (out / name).is_file() else None
        reused = meta is not None and meta.get("fingerprint") == fingerprint
        if meta is not None and reused:
            meta["bytes"] = (out / name).stat().st_size
        plans.append(_ShardPlan(dataset, index, group, fingerprint, name, meta if reused else None, reused))
    return plans


def _write_pending(pending: list[_ShardPlan], executor: Executor, options: PrepareOptions, out: Path) -> None:
    """Stream the pending shards' descriptors through the executor and commit one shard at a time."""
    owners = [(plan, desc) for plan in pending for desc in plan.descriptors]
    results = executor([json.dumps(desc) for _, desc in owners])
    current: tuple[_ShardPlan, ShardWriter, _ShardStats] | None = None
    try:
        for position, result in results:
            plan, desc = owners[position]
            if current is None or current[0] is not plan:
                if current is not None:
                    _commit(*current)
                current = (plan, ShardWriter(out / plan.file, row_group_size=options.row_group_size), _ShardStats())
            _, writer, stats = current
            if isinstance(result, str):
                logger.warning("skipping %s video %s (%s): %s", desc["dataset"], desc["video_id"], desc["name"], result)
                stats.skipped.append({"dataset": desc["dataset"], "video_id": desc["video_id"], "reason": result})
                continue
            stats.videos += 1
            for record in result:
                writer.add(record)
                stats.add(record)
        if current is not None:
            _commit(*current)
            current = None
    finally:
        if current is not None:
            current[1].abort()


def _commit(plan: _ShardPlan, writer: ShardWriter, stats: _ShardStats) -> None:
    meta = {
        "fingerprint": plan.fingerprint,
        "dataset": plan.dataset,
        "records": stats.records,
        "frames": stats.frames,
        "instances": stats.instances,
        "videos": stats.videos,
        "skipped": stats.skipped,
        "category_counts": stats.category_counts,
    }
    meta["bytes"] = writer.commit(meta)
    plan.meta = meta
    logger.info("shard %s: %d records (%d skipped)", plan.file, stats.records, len(stats.skipped))


def prepare(
    sources: Iterable[Source],
    output_dir: str | Path,
    options: PrepareOptions = PrepareOptions(),
    *,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Prepare clip records from the sources into ``output_dir``; returns the manifest written there.

    Args:
        sources: YouTube-VIS and/or COCO inputs.
        output_dir: folder for the shards and ``manifest.json`` (created).
        options: record and shard settings.
        executor: how descriptors are turned into records; default :func:`local_executor`. The CLI passes
            ``ray_data.ray_executor(options)``.

    Raises:
        FileNotFoundError: an annotation file is missing.
        AnnotationSchemaError: an annotation file is malformed (names the field path).
    """
    if options.shard_size < 1 or options.max_size < 1 or (options.num_frames is not None and options.num_frames < 1):
        raise ValueError(f"invalid prepare options {options}: shard_size, max_size and num_frames must be >= 1")
    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # left by a crashed run; never read
        stale.unlink()
    plans, skipped, categories, infos = [], [], [], []
    for source in sources:
        descriptors, source_skipped, source_categories, info = _load_source(source)
        plans += _plan_shards(source.dataset, descriptors, options, out)
        skipped += source_skipped
        categories += [c for c in source_categories if c not in categories]
        infos.append(info)
    pending = [p for p in plans if not p.reused]
    logger.info("%d shards planned, %d reused, %d to build", len(plans), len(plans) - len(pending), len(pending))
    if pending:
        _write_pending(pending, executor or local_executor(options), options, out)
    manifest = _manifest(plans, skipped, categories, infos, options, time.perf_counter() - start)
    listed = {p.file for p in plans}
    for path in out.glob("*.parquet"):
        if path.name not in listed:
            path.unlink()
    write_json_atomic(out / MANIFEST_NAME, manifest)
    logger.info(
        "prepared %d records (%d skipped) in %.1f s -> %s",
        manifest["records"],
        len(manifest["skipped"]),
        manifest["elapsed_s"],
        out,
    )
    return manifest


def _manifest(
    plans: list[_ShardPlan],
    skipped: list[dict[str, Any]],
    categories: list[dict[str, Any]],
    infos: list[dict[str, Any]],
    options: PrepareOptions,
    elapsed: float,
) -> dict[str, Any]:
    metas = [p.meta or {} for p in plans]
    by_dataset: dict[str, int] = {}
    counts: dict[str, int] = {}
    for plan, meta in zip(plans, metas):
        by_dataset[plan.dataset] = by_dataset.get(plan.dataset, 0) + meta["records"]
        for key, value in meta["category_counts"].items():
            counts[key] = counts.get(key, 0) + value
        skipped = skipped + meta["skipped"]
    return {
        "format_version": FORMAT_VERSION,
        "complete": True,
        "created_unix": time.time(),
        "config_hash": options.record_hash(),
        "options": asdict(options),
        "records": sum(m["records"] for m in metas),
        "records_by_dataset": by_dataset,
        "videos": sum(m["videos"] for m in metas),
        "frames": sum(m["frames"] for m in metas),
        "instances": sum(m["instances"] for m in metas),
        "categories": [{**c, "instances": counts.get(str(c["id"]), 0)} for c in categories],
        "instances_per_category": counts,
        "skipped": skipped,
        "sources": infos,
        "shards": [
            {
                "file": p.file,
                "dataset": p.dataset,
                "records": m["records"],
                "bytes": m["bytes"],
                "fingerprint": p.fingerprint,
                "reused": p.reused,
            }
            for p, m in zip(plans, metas)
        ],
        "elapsed_s": round(elapsed, 3),
    }
