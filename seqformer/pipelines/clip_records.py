"""Clip records: building them from video descriptors, their Parquet schema, shard files and the manifest.

A *clip record* is one video (or, with ``num_frames``, a run of at most that many consecutive frames of it) in the
prepared store, with deterministic preprocessing only (STYLE §12): frames stored as JPEG bytes with the longer side
``<= max_size`` (original bytes kept when they already fit, no re-encode), and per instance the category, a
compressed COCO RLE per frame at the stored size (``None`` where the instance is absent), an ``xyxy`` box per frame at
the stored size (zeros where absent) and a per-frame ``valid`` flag. Random clip sampling and augmentation happen at
training time (``transforms.py``).

Shards are Parquet files written to a temporary name and renamed into place when complete, so a crash never leaves
a partial shard under a final name. ``manifest.json`` is written last (also atomically) and is what marks a prepared
folder complete: readers only open the shards it lists.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from seqformer.pipelines.masks import decode_rle, encode_rle, resize_mask_nearest, segmentation_to_mask
from seqformer.pipelines.video_io import CorruptFrameError, prepare_frame

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

INSTANCE_TYPE = pa.struct(
    [
        ("id", pa.int64()),
        ("category_id", pa.int64()),
        ("iscrowd", pa.int8()),
        ("rles", pa.list_(pa.string())),  # one compressed RLE counts string per frame, null where absent
        ("boxes", pa.list_(pa.float32())),  # 4 * T values: xyxy per frame at the stored size, zeros where absent
        ("valid", pa.list_(pa.bool_())),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("video_id", pa.int64()),
        ("video_name", pa.string()),
        ("chunk", pa.int32()),
        ("frame_ids", pa.list_(pa.int32())),
        ("file_names", pa.list_(pa.string())),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("stored_height", pa.int32()),
        ("stored_width", pa.int32()),
        ("frames", pa.list_(pa.binary())),
        ("num_instances", pa.int32()),
        ("instances", pa.list_(INSTANCE_TYPE)),
    ]
)


class SkipVideo(Exception):
    """Raised while building records: this video is skipped; ``str(err)`` is the reason stored in the manifest."""


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise SkipVideo(f"missing frame file {path}") from None
    except OSError as err:
        raise SkipVideo(f"cannot read frame file {path}: {err}") from None


def _load_frames(descriptor: dict[str, Any], max_size: int, jpeg_quality: int) -> tuple[list[bytes], int, int]:
    """Read, validate and (if needed) resize every frame; returns ``(frames, stored_h, stored_w)``."""
    frames: list[bytes] = []
    stored = None
    for path in descriptor["frame_paths"]:
        try:
            data, h, w, sh, sw = prepare_frame(_read_bytes(path), max_size, jpeg_quality, name=path)
        except CorruptFrameError as err:
            raise SkipVideo(f"corrupt frame: {err}") from None
        if (h, w) != (descriptor["height"], descriptor["width"]):
            raise SkipVideo(
                f"frame size disagrees: {path} is {h}x{w} (HxW) but the annotations say "
                f"{descriptor['height']}x{descriptor['width']}"
            )
        stored = (sh, sw)
        frames.append(data)
    if stored is None:
        raise SkipVideo("empty video: no frames")
    return frames, stored[0], stored[1]


def _same_size_rle(seg: Any, height: int, width: int) -> dict[str, Any]:
    """Compressed RLE (pycocotools form, ``counts`` bytes) of a segmentation at its own size, without a dense mask."""
    if isinstance(seg, dict):
        if list(seg["size"]) != [height, width]:
            raise SkipVideo(f"RLE size {seg['size']} disagrees with the video size {[height, width]}")
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, height, width)  # uncompressed → compressed, run by run
        return {"size": [height, width], "counts": seg["counts"].encode("ascii")}
    polygons = [[float(c) for c in p] for p in seg if len(p) >= 6]
    if not polygons:
        return mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))


def _instance_frame(
    seg: Any, box: Any, height: int, width: int, stored: tuple[int, int]
) -> tuple[str | None, list[float]]:
    """RLE string and xyxy box at the stored size of one instance in one frame.

    At the original size no dense mask is made: compressed RLE strings are kept as they are, uncompressed RLE and
    polygons go straight to compressed RLE, and a missing box comes from the RLE (``toBbox``). Only a frame stored
    smaller than the original needs the mask (decode, nearest resize, encode).
    """
    if seg is None:
        return None, [0.0, 0.0, 0.0, 0.0]
    if stored == (height, width):
        if isinstance(seg, dict) and isinstance(seg.get("counts"), str) and list(seg["size"]) == [height, width]:
            rle_obj = None
            rle = seg["counts"]  # already compressed at the stored size: keep it exactly
        else:
            rle_obj = _same_size_rle(seg, height, width)
            rle = rle_obj["counts"].decode("ascii")
    else:
        if isinstance(seg, dict) and list(seg["size"]) != [height, width]:
            raise SkipVideo(f"RLE size {seg['size']} disagrees with the video size {[height, width]}")
        mask = resize_mask_nearest(segmentation_to_mask(seg, height, width), *stored)
        rle = encode_rle(mask)
        rle_obj = None
    if box is not None:
        sy, sx = stored[0] / height, stored[1] / width
        x, y, w, h = (float(v) for v in box)
        return rle, [x * sx, y * sy, (x + w) * sx, (y + h) * sy]
    if rle_obj is None:
        rle_obj = {"size": list(stored), "counts": rle.encode("ascii")}
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle_obj))
    return rle, [x, y, x + w, y + h]


def build_records(
    descriptor: dict[str, Any], *, max_size: int, jpeg_quality: int = 95, num_frames: int | None = None
) -> list[dict[str, Any]]:
    """Build the clip record(s) of one video descriptor (see ``ytvis.video_descriptors``).

    Args:
        descriptor: one video (or COCO image) descriptor.
        max_size: frames are stored with the longer side ``<= max_size``.
        jpeg_quality: quality of re-encoded frames.
        num_frames: when set, the video is cut into records of at most this many consecutive frames; instances
            absent from every frame of a chunk are dropped from that chunk.

    Returns:
        Records as dicts with the keys of :data:`RECORD_SCHEMA`.

    Raises:
        SkipVideo: the video must be skipped (missing/corrupt frame, size or count mismatch, ...).
    """
    if descriptor.get("problem"):
        raise SkipVideo(descriptor["problem"])
    frames, stored_h, stored_w = _load_frames(descriptor, max_size, jpeg_quality)
    height, width = descriptor["height"], descriptor["width"]
    instances = []
    for inst in descriptor["instances"]:
        rles, boxes, valid = [], [], []
        for seg, box in zip(inst["segmentations"], inst["bboxes"]):
            try:
                rle, xyxy = _instance_frame(seg, box, height, width, (stored_h, stored_w))
            except (ValueError, TypeError, KeyError) as err:
                raise SkipVideo(f"bad segmentation in annotation {inst['id']}: {err}") from None
            rles.append(rle)
            boxes.append(xyxy)
            valid.append(rle is not None)
        instances.append({**inst, "rles": rles, "boxes": boxes, "valid": valid})
    total = len(frames)
    step = num_frames or total
    records = []
    for chunk, start in enumerate(range(0, total, step)):
        stop = min(total, start + step)
        chunk_instances = [
            {
                "id": inst["id"],
                "category_id": inst["category_id"],
                "iscrowd": inst["iscrowd"],
                "rles": inst["rles"][start:stop],
                "boxes": [c for b in inst["boxes"][start:stop] for c in b],
                "valid": inst["valid"][start:stop],
            }
            for inst in instances
            if any(inst["valid"][start:stop])
        ]
        records.append(
            {
                "dataset": descriptor["dataset"],
                "video_id": descriptor["video_id"],
                "video_name": descriptor["name"],
                "chunk": chunk,
                "frame_ids": list(range(start, stop)),
                "file_names": descriptor["file_names"][start:stop],
                "height": height,
                "width": width,
                "stored_height": stored_h,
                "stored_width": stored_w,
                "frames": frames[start:stop],
                "num_instances": len(chunk_instances),
                "instances": chunk_instances,
            }
        )
    return records


def planned_records(descriptor: dict[str, Any], num_frames: int | None) -> int:
    """How many records a descriptor yields if nothing is skipped."""
    total = len(descriptor["file_names"])
    return max(1, -(-total // num_frames)) if num_frames else 1


# ----------------------------------------------------------------------------------------------------------------
# Decoding a record (as pyarrow or Ray Data yields it) into arrays


def record_masks(record: dict[str, Any]) -> np.ndarray:
    """Bool masks ``[N, T, H, W]`` at the stored size (absent frames all False)."""
    h, w = int(record["stored_height"]), int(record["stored_width"])
    num_t = len(record["frames"])
    out = np.zeros((len(record["instances"]), num_t, h, w), dtype=bool)
    for n, inst in enumerate(record["instances"]):
        for t, rle in enumerate(inst["rles"]):
            if rle is not None:
                out[n, t] = decode_rle(rle, h, w)
    return out


def record_boxes(record: dict[str, Any]) -> np.ndarray:
    """float32 ``[N, T, 4]`` xyxy boxes at the stored size (zeros where absent)."""
    num_t = len(record["frames"])
    boxes = [np.asarray(inst["boxes"], dtype=np.float32).reshape(num_t, 4) for inst in record["instances"]]
    return np.stack(boxes) if boxes else np.zeros((0, num_t, 4), dtype=np.float32)


def record_valid(record: dict[str, Any]) -> np.ndarray:
    """bool ``[N, T]``."""
    num_t = len(record["frames"])
    valid = [np.asarray(inst["valid"], dtype=bool) for inst in record["instances"]]
    return np.stack(valid) if valid else np.zeros((0, num_t), dtype=bool)


def record_labels(record: dict[str, Any]) -> np.ndarray:
    """int64 ``[N]`` category ids."""
    return np.asarray([int(inst["category_id"]) for inst in record["instances"]], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Shards and the manifest


class ShardWriter:
    """Writes records into one Parquet shard under a temporary name; :meth:`commit` renames it into place.

    Records are buffered and flushed as row groups of ``row_group_size`` so memory stays bounded by one row group.
    """

    def __init__(self, path: str | Path, *, row_group_size: int = 8) -> None:
        self.path = Path(path)
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self.row_group_size = row_group_size
        # frames are already JPEG: no compression, no dictionary attempt and no min/max statistics on the big columns
        self._writer = pq.ParquetWriter(
            str(self.tmp_path),
            RECORD_SCHEMA,
            compression="none",
            use_dictionary=["dataset"],
            write_statistics=["dataset", "video_id", "chunk", "num_instances"],
        )
        self._buffer: list[dict[str, Any]] = []
        self.records = 0

    def add(self, record: dict[str, Any]) -> None:
        self._buffer.append(record)
        self.records += 1
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Append records already in Arrow form (``RECORD_SCHEMA``), in row groups of at most ``row_group_size``."""
        self._flush()
        if table.num_rows:
            self._writer.write_table(table, row_group_size=self.row_group_size)
            self.records += table.num_rows

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=RECORD_SCHEMA))
            self._buffer = []

    def commit(self, metadata: dict[str, Any]) -> int:
        """Finish the file (``metadata`` goes into the Parquet footer as JSON) and rename it; returns its bytes."""
        self._flush()
        self._writer.add_key_value_metadata({"seqformer": json.dumps(metadata)})
        self._writer.close()
        os.replace(self.tmp_path, self.path)
        return self.path.stat().st_size

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)


def shard_metadata(path: str | Path) -> dict[str, Any] | None:
    """The metadata a committed shard carries in its footer, or ``None`` when unreadable."""
    try:
        meta = pq.read_metadata(str(path)).metadata or {}
        return json.loads(meta[b"seqformer"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(prepared_dir: str | Path) -> dict[str, Any]:
    """Load ``manifest.json`` of a prepared folder.

    Raises:
        FileNotFoundError: no manifest (the folder was never prepared, or preparation did not finish).
    """
    path = Path(prepared_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {prepared_dir} is not a complete prepared dataset; run `seqformer prepare` first"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {manifest.get('format_version')!r}, expected {FORMAT_VERSION}; "
            "re-run `seqformer prepare`"
        )
    return manifest


def shard_paths(prepared_dir: str | Path, datasets: tuple[str, ...] | None = None) -> list[str]:
    """Paths of the shards the manifest lists (optionally only those of the given datasets)."""
    manifest = read_manifest(prepared_dir)
    return [
        str(Path(prepared_dir) / s["file"])
        for s in manifest["shards"]
        if s["records"] > 0 and (datasets is None or s["dataset"] in datasets)
    ]


def iter_records(
    prepared_dir: str | Path, datasets: tuple[str, ...] | None = None, columns: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream records of a prepared folder with pyarrow (no Ray), one row group in memory at a time."""
    for path in shard_paths(prepared_dir, datasets):
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group, columns=columns).to_pylist()
