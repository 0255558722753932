"""Clip records built with the plain local loop: round trip, shards, manifest, incremental re-runs, crashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from seqformer.pipelines.clip_records import (
    iter_records,
    read_manifest,
    record_boxes,
    record_labels,
    record_masks,
    record_valid,
)
from seqformer.pipelines.masks import segmentation_to_mask
from seqformer.pipelines.prepare import PrepareOptions, Source, local_executor, prepare


def _source(root: Path, annotations: Path) -> list[Source]:
    return [Source("ytvis", str(annotations), str(root))]


def test_records_round_trip_masks_boxes_categories_and_frames(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    manifest = prepare(_source(root, annotations), tmp_path / "out", PrepareOptions(shard_size=2))
    data = json.loads(annotations.read_text())
    records = {r["video_id"]: r for r in iter_records(tmp_path / "out")}
    assert manifest["records"] == len(records) == len(data["videos"]) == 5
    for video in data["videos"]:
        record = records[video["id"]]
        anns = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        assert record["file_names"] == video["file_names"]
        # frames already fit max_size: stored bytes are the original files, not re-encoded
        assert record["frames"] == [(root / "JPEGImages" / f).read_bytes() for f in video["file_names"]]
        masks, boxes, valid = record_masks(record), record_boxes(record), record_valid(record)
        assert record_labels(record).tolist() == [a["category_id"] for a in anns]
        assert [i["id"] for i in record["instances"]] == [a["id"] for a in anns]
        for n, ann in enumerate(anns):
            for t, (seg, box) in enumerate(zip(ann["segmentations"], ann["bboxes"])):
                assert valid[n, t] == (seg is not None)
                if seg is None:
                    assert not masks[n, t].any() and (boxes[n, t] == 0).all()
                else:
                    np.testing.assert_array_equal(masks[n, t], segmentation_to_mask(seg, 64, 64))
                    x, y, w, h = box
                    np.testing.assert_allclose(boxes[n, t], [x, y, x + w, y + h], atol=1e-4)


def test_shard_and_record_counts_and_manifest(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    manifest = prepare(_source(root, annotations), tmp_path / "out", PrepareOptions(shard_size=2))
    assert [s["records"] for s in manifest["shards"]] == [2, 2, 1]
    files = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))
    assert files == sorted(s["file"] for s in manifest["shards"])
    assert sum(pq.ParquetFile(tmp_path / "out" / f).metadata.num_rows for f in files) == 5
    on_disk = read_manifest(tmp_path / "out")
    assert on_disk["records"] == 5 and on_disk["skipped"] == [] and on_disk["complete"] is True
    assert on_disk["sources"][0]["annotations_sha256"] and on_disk["config_hash"]
    assert {c["name"] for c in on_disk["categories"]} == {"circle", "square", "triangle", "star"}
    assert on_disk["frames"] == sum(len(v["file_names"]) for v in json.loads(annotations.read_text())["videos"])


def test_num_frames_cuts_videos_into_chunks(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    lengths = [len(v["file_names"]) for v in json.loads(annotations.read_text())["videos"]]
    manifest = prepare(_source(root, annotations), tmp_path / "out", PrepareOptions(num_frames=3, shard_size=4))
    assert manifest["records"] == sum(-(-n // 3) for n in lengths)
    records = list(iter_records(tmp_path / "out"))
    assert all(1 <= len(r["frames"]) <= 3 for r in records)
    first = [r for r in records if r["video_id"] == 1]
    assert [r["frame_ids"] for r in first][:2] == [[0, 1, 2], [3, 4, 5]]
    assert all(r["num_instances"] == len(r["instances"]) for r in records)
    assert all(all(any(inst["valid"]) for inst in r["instances"]) for r in records)


def test_max_size_resizes_frames_and_masks(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    prepare(_source(root, annotations), tmp_path / "out", PrepareOptions(max_size=32))
    record = next(iter_records(tmp_path / "out"))
    assert (record["height"], record["width"], record["stored_height"], record["stored_width"]) == (64, 64, 32, 32)
    assert Image.open(__import__("io").BytesIO(record["frames"][0])).size == (32, 32)
    assert record_masks(record).shape[-2:] == (32, 32)
    assert record_boxes(record).max() <= 32


def test_rerun_is_incremental(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy
    out = tmp_path / "out"
    first = prepare(_source(root, annotations), out, PrepareOptions(shard_size=2))
    second = prepare(_source(root, annotations), out, PrepareOptions(shard_size=2))
    assert all(s["reused"] for s in second["shards"])
    # touch a frame of the last video: only its shard is rebuilt
    video = json.loads(annotations.read_text())["videos"][-1]
    frame = root / "JPEGImages" / video["file_names"][0]
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    third = prepare(_source(root, annotations), out, PrepareOptions(shard_size=2))
    assert [s["reused"] for s in third["shards"]] == [True, True, False]
    assert third["records"] == first["records"] == 5
    # changing a record setting rebuilds everything and removes the stale shards
    fourth = prepare(_source(root, annotations), out, PrepareOptions(shard_size=2, max_size=48))
    assert not any(s["reused"] for s in fourth["shards"])
    assert sorted(p.name for p in out.glob("*.parquet")) == sorted(s["file"] for s in fourth["shards"])


def test_crash_midway_leaves_no_partial_shard_and_rerun_resumes(synthetic_source, tmp_path: Path) -> None:
    root, annotations = synthetic_source
    out = tmp_path / "out"
    options = PrepareOptions(shard_size=2, window_frames=1)  # one video per window
    inner = local_executor(options)

    def crashing(items):
        for position, result in inner(items):
            if position == 3:  # the second window of the second shard: its first window is already written
                raise RuntimeError("worker died")
            yield position, result

    with pytest.raises(RuntimeError, match="worker died"):
        prepare(_source(root, annotations), out, options, executor=crashing)
    assert not (out / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="seqformer prepare"):
        list(iter_records(out))
    committed = list(out.glob("*.parquet"))
    assert len(committed) == 1 and not list(out.glob(".*tmp*"))  # the first shard only, complete
    resumed = prepare(_source(root, annotations), out, options)
    assert [s["reused"] for s in resumed["shards"]] == [True, False, False]
    assert resumed["records"] == 5
