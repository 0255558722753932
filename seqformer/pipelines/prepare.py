"""``seqformer prepare``: YouTube-VIS / COCO sources → sharded Parquet clip records + ``manifest.json``.

Streaming, so memory stays flat as the dataset grows:

* Index (driver): each annotation JSON is read once by a streaming parser that validates every element and keeps a
  compact per-video index of byte ranges into the file (``ytvis.YtvisIndex``, ``coco.CocoIndex``); schema errors
  fail fast here, before anything is built.
* Plan (driver): videos are re-read one at a time as their original JSON bytes (only the small ``videos`` element
  is parsed, for its frame names), grouped into shards of at most ``shard_size`` planned records and, inside a
  shard, into *windows* of about ``window_frames`` frames. Each video's bytes are hashed into its shard's
  fingerprint (config hash + annotations + size/mtime of each frame file) and appended to a spill file of JSON
  lines; a window is only its byte range there. A shard whose committed file carries the same fingerprint is reused
  (incremental re-runs, also after a crash). The driver holds at most one window of videos, never as descriptors.
* Build: the executor (Ray Data, ``ray_data.ray_executor``, or the plain loop :func:`local_executor`) turns each
  window into an Arrow table of records on a worker (parse the window's videos into descriptors, decode and check every
  frame, resize only frames over ``max_size``, RLE-encode masks) and yields the tables in window order.
* Write (driver): tables are appended to the current shard's Parquet file under a temporary name; a shard is renamed
  into place when its last window has arrived, so a crash never leaves a partial shard under a final name. Counts
  are running totals; ``manifest.json`` is written last, atomically. Files the manifest does not list are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from seqformer.pipelines.clip_records import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    RECORD_SCHEMA,
    ShardWriter,
    SkipVideo,
    build_records,
    planned_records,
    shard_metadata,
    write_json_atomic,
)
from seqformer.pipelines.coco import CocoIndex
from seqformer.pipelines.ytvis import YtvisIndex, descriptor_from_spill, file_sha256, iter_frame_stats

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
    """Most records per Parquet row group."""
    window_frames: int = 128
    """Videos go to the executor in windows of about this many frames (at least one video; never across a shard):
    the unit of work of one Ray Data task and the most the driver or a worker holds at once."""

    def record_hash(self) -> str:
        """Hash of everything that changes record content (not sharding)."""
        keys = {
            "format": FORMAT_VERSION,
            "max_size": self.max_size,
            "jpeg_quality": self.jpeg_quality,
            "num_frames": self.num_frames,
            "frame_resize": "jpeg-draft+bilinear",
        }
        return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


WindowResult = tuple[pa.Table, dict[str, Any]]
"""Records of one window (``RECORD_SCHEMA``) and its outcome: ``videos``, ``records``, ``frames``, ``instances``,
``category_counts`` and ``skipped`` (``{dataset, video_id, name, reason}`` per skipped video)."""

Executor = Callable[[Iterable[dict[str, Any]]], Iterator[tuple[int, WindowResult]]]
"""Takes window references (``{"spill", "offset", "size", "videos", "context"}``, planned lazily as they are
pulled); yields ``(position, result)`` in input order."""


def read_window(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The descriptors of one window, read back from the spill file."""
    with open(item["spill"], "rb") as handle:
        handle.seek(item["offset"])
        data = handle.read(item["size"])
    return [descriptor_from_spill(line, item["context"]) for line in data.split(b"\n")]


def build_window(item: dict[str, Any], options: PrepareOptions) -> WindowResult:
    """Records of one window as an Arrow table, plus its outcome (runs on Ray Data workers or in the local loop)."""
    records: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {
        "videos": 0,
        "records": 0,
        "frames": 0,
        "instances": 0,
        "category_counts": {},
        "skipped": [],
    }
    counts = outcome["category_counts"]
    for descriptor in read_window(item):
        try:
            built = build_records(
                descriptor, max_size=options.max_size, jpeg_quality=options.jpeg_quality, num_frames=options.num_frames
            )
        except SkipVideo as err:
            outcome["skipped"].append(
                {
                    "dataset": descriptor["dataset"],
                    "video_id": descriptor["video_id"],
                    "name": descriptor["name"],
                    "reason": str(err),
                }
            )
            continue
        outcome["videos"] += 1
        for record in built:
            outcome["records"] += 1
            outcome["frames"] += len(record["frames"])
            outcome["instances"] += record["num_instances"]
            for inst in record["instances"]:
                key = str(inst["category_id"])
                counts[key] = counts.get(key, 0) + 1
        records += built
    return pa.Table.from_pylist(records, schema=RECORD_SCHEMA), outcome


def local_executor(options: PrepareOptions) -> Executor:
    """A plain single-process loop (the baseline of ``benchmarks/prepare.py`` and Ray-free tests)."""

    def run(items: Iterable[dict[str, Any]]) -> Iterator[tuple[int, WindowResult]]:
        for position, item in enumerate(items):
            yield position, build_window(item, options)

    return run


# ---------------------------------------------------------------------------------------------------------------
# Planning: stream descriptors into shards and windows


class _Spill:
    """Append-only JSON-lines file of the descriptors still to build; a window is a byte range of it."""

    def __init__(self, folder: Path) -> None:
        # absolute: workers (other processes, maybe other working directories) read windows from it
        self.path = folder.resolve() / f".descriptors.tmp-{uuid.uuid4().hex[:8]}.jsonl"
        self._handle = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._offset = 0

    def window(self, lines: list[bytes], context: dict[str, Any]) -> dict[str, Any]:
        data = b"\n".join(lines)
        self._handle.write(data)
        item = {
            "spill": str(self.path),
            "offset": self._offset,
            "size": len(data),
            "videos": len(lines),
            "context": context,
        }
        self._offset += len(data)
        self._handle.flush()  # workers read it while the driver goes on planning
        return item

    def close(self) -> None:
        self._handle.close()

    def flush(self) -> None:
        self._handle.flush()

    def remove(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


@dataclass
class _ShardPlan:
    dataset: str
    index: int
    fingerprint: str = ""
    file: str = ""
    meta: dict[str, Any] | None = None
    reused: bool = False
    closed: bool = False


class _Planner:
    """Groups a stream of videos into shard plans and windows; holds at most one window of videos (as JSON lines).

    :meth:`add` returns the windows that may be built now. Windows of a shard that cannot be a reuse (no committed
    file of that dataset and index exists) go out as soon as they are full; otherwise they wait for the shard's
    fingerprint and are dropped if the shard is reused.
    """

    def __init__(
        self, dataset: str, context: dict[str, Any], options: PrepareOptions, out: Path, spill: _Spill
    ) -> None:
        self.dataset, self.context, self.options, self.out, self.spill = dataset, context, options, out, spill
        self.root = Path(context["root"])
        self.plans: list[_ShardPlan] = []
        self._existing = {p.name.split("-")[1] for p in out.glob(f"{dataset}-*.parquet") if p.name.count("-") >= 2}
        self._new_shard()

    def _new_shard(self) -> None:
        self.plan = _ShardPlan(self.dataset, len(self.plans))
        self._maybe_reused = f"{self.plan.index:05d}" in self._existing
        self._digest = hashlib.sha256(self.options.record_hash().encode())
        self._digest.update(json.dumps(self.context, sort_keys=True).encode())
        self._planned = 0
        self._held: list[dict[str, Any]] = []
        self._lines: list[bytes] = []
        self._frames = 0
        self._videos = 0

    def add(self, file_names: list[str], line: bytes) -> list[tuple[_ShardPlan, dict[str, Any]]]:
        """Plan one video: ``line`` is its spilled annotations (``YtvisIndex.iter_spill``)."""
        frames = len(file_names)
        planned = planned_records({"file_names": file_names}, self.options.num_frames)
        ready = []
        if self._videos and self._planned + planned > self.options.shard_size:
            ready += self.close_shard()
        self._digest.update(line)
        paths = {"frame_paths": [str(self.root / name) for name in file_names]}
        self._digest.update(json.dumps(list(iter_frame_stats(paths))).encode())
        if self._lines and self._frames + frames > self.options.window_frames:
            ready += self._close_window()
        self._lines.append(line)
        self._frames += frames
        self._planned += planned
        self._videos += 1
        return ready

    def _close_window(self) -> list[tuple[_ShardPlan, dict[str, Any]]]:
        if not self._lines:
            return []
        window = self.spill.window(self._lines, self.context)
        self._lines, self._frames = [], 0
        if self._maybe_reused:
            self._held.append(window)
            return []
        return [(self.plan, window)]

    def close_shard(self) -> list[tuple[_ShardPlan, dict[str, Any]]]:
        """Close the current shard (fingerprint, name, reuse); returns its windows still to build."""
        if not self._videos:
            return []
        ready = self._close_window()
        plan = self.plan
        plan.fingerprint = self._digest.hexdigest()
        plan.file = f"{self.dataset}-{plan.index:05d}-{plan.fingerprint[:16]}.parquet"
        path = self.out / plan.file
        meta = shard_metadata(path) if self._maybe_reused and path.is_file() else None
        plan.reused = meta is not None and meta.get("fingerprint") == plan.fingerprint
        if plan.reused:
            meta["bytes"] = path.stat().st_size
            plan.meta = meta
        else:
            ready += [(plan, window) for window in self._held]
        plan.closed = True
        self.plans.append(plan)
        self._new_shard()
        return ready


def _index_source(source: Source) -> tuple[YtvisIndex | CocoIndex, dict[str, Any]]:
    if source.dataset == "ytvis":
        index: YtvisIndex | CocoIndex = YtvisIndex.build(source.annotations, source.root, dataset="ytvis")
        items, filtered = len(index), {}
    elif source.dataset == "coco":
        index = CocoIndex.build(source.annotations, source.root, category_map=source.category_map)
        filtered = index.filtered()
        items = len(index.image_ids) - sum(filtered.values())
        logger.info("%s: %d images kept as pseudo-clip sources, filtered: %s", source.annotations, items, filtered)
    else:
        raise ValueError(f"Source.dataset must be 'ytvis' or 'coco', got {source.dataset!r}")
    info = {
        "dataset": source.dataset,
        "annotations": str(source.annotations),
        "root": str(source.root),
        "annotations_sha256": file_sha256(source.annotations),
        "items": items,
        "filtered": filtered,
    }
    return index, info


# ---------------------------------------------------------------------------------------------------------------
# Building and writing


@dataclass
class _Totals:
    """Running totals of the manifest (reused shards from their footers, built shards as they are committed)."""

    records_by_dataset: dict[str, int] = field(default_factory=dict)
    videos: int = 0
    frames: int = 0
    instances: int = 0
    category_counts: dict[str, int] = field(default_factory=dict)

    def add(self, dataset: str, meta: dict[str, Any]) -> None:
        self.records_by_dataset[dataset] = self.records_by_dataset.get(dataset, 0) + meta["records"]
        self.videos += meta["videos"]
        self.frames += meta["frames"]
        self.instances += meta["instances"]
        for key, value in meta["category_counts"].items():
            self.category_counts[key] = self.category_counts.get(key, 0) + value


class _OpenShard:
    def __init__(self, plan: _ShardPlan, out: Path, options: PrepareOptions) -> None:
        self.plan, self.out = plan, out
        # the final name (it holds the fingerprint) is known once the shard is planned to its end: rename then
        provisional = out / f"{plan.dataset}-{plan.index:05d}.parquet"
        self.writer = ShardWriter(provisional, row_group_size=options.row_group_size)
        self.meta: dict[str, Any] = {
            "fingerprint": "",
            "dataset": plan.dataset,
            "records": 0,
            "frames": 0,
            "instances": 0,
            "videos": 0,
            "skipped": [],
            "category_counts": {},
        }

    def add(self, table: pa.Table, outcome: dict[str, Any]) -> None:
        self.writer.add_table(table)
        meta = self.meta
        for key in ("records", "frames", "instances", "videos"):
            meta[key] += outcome[key]
        for key, value in outcome["category_counts"].items():
            meta["category_counts"][key] = meta["category_counts"].get(key, 0) + value
        for skip in outcome["skipped"]:
            logger.warning(
                "skipping %s video %s (%s): %s", skip["dataset"], skip["video_id"], skip["name"], skip["reason"]
            )
            meta["skipped"].append({"dataset": skip["dataset"], "video_id": skip["video_id"], "reason": skip["reason"]})

    def commit(self) -> dict[str, Any]:
        assert self.plan.closed, "a shard is committed only after it was planned to its end"
        self.meta["fingerprint"] = self.plan.fingerprint
        self.writer.path = self.out / self.plan.file
        self.meta["bytes"] = self.writer.commit(self.meta)
        self.plan.meta = self.meta
        logger.info(
            "shard %s: %d records (%d skipped)", self.plan.file, self.meta["records"], len(self.meta["skipped"])
        )
        return self.meta


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
        executor: how windows of videos are turned into records; default :func:`local_executor`. The CLI passes
            ``ray_data.ray_executor(options)``.

    Raises:
        FileNotFoundError: an annotation file is missing.
        AnnotationSchemaError: an annotation file is malformed (names the field path).
    """
    if (
        options.shard_size < 1
        or options.max_size < 1
        or options.window_frames < 1
        or (options.num_frames is not None and options.num_frames < 1)
    ):
        raise ValueError(
            f"invalid prepare options {options}: shard_size, max_size, window_frames and num_frames must be >= 1"
        )
    start = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # left by a crashed run; never read
        stale.unlink()
    indexed = [(source, *_index_source(source)) for source in sources]  # every schema error before any work
    skipped: list[dict[str, Any]] = []
    categories: list[dict[str, Any]] = []
    plans: list[_ShardPlan] = []
    totals = _Totals()
    owners: dict[int, _ShardPlan] = {}  # position of a window handed to the executor -> its shard (until written)

    def windows(spill: _Spill) -> Iterator[dict[str, Any]]:
        """Plans lazily, as the executor pulls windows: planning overlaps building."""
        for source, index, _ in indexed:
            planner = _Planner(source.dataset, index.context(), options, out, spill)
            for file_names, line in index.iter_spill():
                for plan, window in planner.add(file_names, line):
                    owners[len(owners) + written[0]] = plan  # = the number of windows handed out so far
                    yield window
            for plan, window in planner.close_shard():
                owners[len(owners) + written[0]] = plan
                yield window
            plans.extend(planner.plans)

    written = [0]
    spill = _Spill(out)
    current: _OpenShard | None = None
    try:
        for position, (table, outcome) in (executor or local_executor(options))(windows(spill)):
            assert position == written[0], "executor results out of order"
            plan = owners.pop(position)
            written[0] += 1
            if current is not None and current.plan is not plan:
                totals.add(current.plan.dataset, current.commit())
                current = None
            if current is None:
                current = _OpenShard(plan, out, options)
            current.add(table, outcome)
            del table
        if current is not None:
            totals.add(current.plan.dataset, current.commit())
            current = None
        assert not owners, "the executor stopped before the last window"
    finally:
        if current is not None:
            current.writer.abort()
        spill.remove()
    for _, index, _ in indexed:
        if isinstance(index, YtvisIndex):
            skipped += index.unlisted_skips()
            categories += [c for c in index.categories if c not in categories]
    for plan in plans:
        if plan.reused:
            totals.add(plan.dataset, plan.meta)
        skipped += plan.meta["skipped"]
    reused = sum(p.reused for p in plans)
    logger.info("%d shards: %d reused, %d built", len(plans), reused, len(plans) - reused)
    manifest = _manifest(plans, skipped, categories, [info for _, _, info in indexed], totals, options, start)
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
    totals: _Totals,
    options: PrepareOptions,
    start: float,
) -> dict[str, Any]:
    counts = totals.category_counts
    return {
        "format_version": FORMAT_VERSION,
        "complete": True,
        "created_unix": time.time(),
        "config_hash": options.record_hash(),
        "options": asdict(options),
        "records": sum(totals.records_by_dataset.values()),
        "records_by_dataset": totals.records_by_dataset,
        "videos": totals.videos,
        "frames": totals.frames,
        "instances": totals.instances,
        "categories": [{**c, "instances": counts.get(str(c["id"]), 0)} for c in categories],
        "instances_per_category": counts,
        "skipped": skipped,
        "sources": infos,
        "shards": [
            {
                "file": p.file,
                "dataset": p.dataset,
                "records": p.meta["records"],
                "bytes": p.meta["bytes"],
                "fingerprint": p.fingerprint,
                "reused": p.reused,
            }
            for p in plans
        ],
        "elapsed_s": round(time.perf_counter() - start, 3),
    }
