"""Ray Data: prepare with the Ray executor, the training dataset and the `seqformer prepare` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqformer.pipelines.clip_records import iter_records
from seqformer.pipelines.collate import iter_clip_batches
from seqformer.pipelines.prepare import PrepareOptions, Source, prepare
from seqformer.pipelines.synthetic import corrupt_truncate
from seqformer.pipelines.transforms import AugmentationConfig

pytestmark = pytest.mark.ray

SMALL = AugmentationConfig(train_scales=(48, 64), max_train_size=96, crop_scales=(64,), crop_min=40, crop_max=64)


def test_ray_prepare_matches_the_local_loop(local_ray, ytvis_copy, tmp_path: Path) -> None:
    from seqformer.pipelines.ray_data import ray_executor

    root, annotations = ytvis_copy
    corrupt_truncate(root / "JPEGImages" / json.loads(annotations.read_text())["videos"][1]["file_names"][0])
    sources = [Source("ytvis", str(annotations), str(root))]
    options = PrepareOptions(shard_size=2, num_frames=5)
    by_ray = prepare(sources, tmp_path / "ray", options, executor=ray_executor(options))
    local = prepare(sources, tmp_path / "local", options)
    assert by_ray["records"] == local["records"] > 0
    assert [s["file"] for s in by_ray["shards"]] == [s["file"] for s in local["shards"]]
    assert [s["video_id"] for s in by_ray["skipped"]] == [2]
    assert list(iter_records(tmp_path / "ray")) == list(iter_records(tmp_path / "local"))


@pytest.mark.parametrize("plan_ahead_s", [0.0, 1.0])
def test_ray_executor_streams_windows_through_several_datasets(
    local_ray, synthetic_source, tmp_path: Path, plan_ahead_s: float
) -> None:
    import ray.data

    from seqformer.pipelines.ray_data import ray_executor

    root, annotations = synthetic_source
    sources = [Source("ytvis", str(annotations), str(root))]
    options = PrepareOptions(shard_size=2, window_frames=1)  # one video per window, shards of two windows
    # at most 3 windows per Ray Data dataset: windows are planned while earlier datasets run, order is kept;
    # plan_ahead_s=0 starts each dataset on 2 * CPUs windows and plans the rest while it runs
    executor = ray_executor(options, max_batch_windows=3, max_in_flight_mib=16, plan_ahead_s=plan_ahead_s)
    ctx = ray.data.DataContext.get_current()
    reservation = ctx.op_resource_reservation_enabled
    by_ray = prepare(sources, tmp_path / "ray", options, executor=executor)
    assert ctx.op_resource_reservation_enabled == reservation  # switched off for the run only
    local = prepare(sources, tmp_path / "local", options)
    assert [s["records"] for s in by_ray["shards"]] == [2, 2, 1]
    assert [s["file"] for s in by_ray["shards"]] == [s["file"] for s in local["shards"]]
    assert list(iter_records(tmp_path / "ray")) == list(iter_records(tmp_path / "local"))
    assert not list((tmp_path / "ray").glob(".*tmp*"))


def test_training_dataset_feeds_clip_batches(local_ray, synthetic_source, tmp_path: Path) -> None:
    from seqformer.pipelines.ray_data import training_dataset

    root, annotations = synthetic_source
    prepare([Source("ytvis", str(annotations), str(root))], tmp_path / "out", PrepareOptions(shard_size=2))
    dataset = training_dataset(tmp_path / "out", shuffle_seed=0)
    rows = list(dataset.iter_rows())
    assert len(rows) == 5 and all(isinstance(r["frames"][0], bytes) for r in rows)
    batches = list(iter_clip_batches(rows, num_frames=3, batch_size=2, augmentation=SMALL, seed=0))
    assert len(batches) == 2 and batches[0]["clips"][0].shape[:2] == (3, 3)
    # an equal two-way split, as Ray Train does per worker, covers the records without overlap
    halves = [[r["video_id"] for r in part.iter_rows()] for part in dataset.split(2, equal=True)]
    assert len(halves[0]) == len(halves[1]) == 2 and not set(halves[0]) & set(halves[1])
    with pytest.raises(FileNotFoundError, match="seqformer prepare"):
        training_dataset(tmp_path / "nothing")


def test_adhoc_cli_writes_shards_and_manifest(local_ray, ytvis_copy, tmp_path: Path) -> None:
    from seqformer.platform.cli import main

    root, annotations = ytvis_copy
    (root / "JPEGImages" / json.loads(annotations.read_text())["videos"][0]["file_names"][0]).unlink()
    out = tmp_path / "prepared"
    code = main(
        [
            "prepare",
            "--ytvis-root",
            str(root),
            "--annotations",
            str(annotations),
            "--output",
            str(out),
            "--num-frames",
            "4",
            "--shard-size",
            "3",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records"] == sum(1 for _ in iter_records(out)) > 0
    assert [(s["video_id"], "missing frame" in s["reason"]) for s in manifest["skipped"]] == [(1, True)]
    assert main(["prepare", "--ytvis-root", str(root), "--output", str(out)]) == 2  # --annotations missing


def test_experiment_cli_generates_and_prepares_synthetic_data(local_ray, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    pytest.importorskip("seqformer.model.config")
    from seqformer.platform.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(
        "data:\n  dataset: synthetic\n  root: synth\n  prepared_dir: prepared\n  shard_size: 2\n"
        "  synthetic: {train_videos: 3, val_videos: 2, height: 48, width: 48, min_frames: 3, max_frames: 5}\n"
    )
    assert main(["prepare", "exp.yaml"]) == 0
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["records"] == 3 and len(manifest["shards"]) == 2
    assert (tmp_path / "synth" / "train.json").is_file() and (tmp_path / "synth" / "val.json").is_file()
    assert main(["prepare", "exp.yaml", "data.max_size=32"]) == 0  # overrides apply; records rebuilt
    record = next(iter_records(tmp_path / "prepared"))
    assert record["stored_height"] == 32
