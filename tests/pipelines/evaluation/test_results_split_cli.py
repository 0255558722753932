"""Results writer, results.zip layout, held-out split tool and the two CLI commands."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from seqformer.pipelines.evaluation import evaluate_files, split_annotations, write_results_json, write_results_zip
from seqformer.pipelines.evaluation.split import split_video_ids
from seqformer.platform.cli import main
from tests.pipelines.evaluation.cases import box, gt_file, result

A = box(6, 6, 0, 0, 3, 3)


def _gt():
    return gt_file([(1, 6, 6, 2)], [1, 2], [{"id": 1, "video_id": 1, "category_id": 1, "masks": [A, A]}])


def test_results_json_and_zip_round_trip_through_the_evaluator(tmp_path):
    masks = np.stack([A, A])
    results = [
        {"video_id": np.int64(1), "category_id": 1, "score": np.float32(0.9), "segmentations": masks},
        result(1, 2, 0.4, [A, None]),
    ]
    path = write_results_json(results, tmp_path / "out" / "results.json")
    (tmp_path / "gt.json").write_text(json.dumps(_gt()))
    written = json.loads(path.read_text())
    assert written[0]["segmentations"][0]["size"] == [6, 6] and isinstance(
        written[0]["segmentations"][0]["counts"], str
    )
    assert written[1]["segmentations"][1] is None
    assert evaluate_files(tmp_path / "gt.json", path)["AP"] == pytest.approx(1.0)
    archive = write_results_zip(results, tmp_path / "results.zip")
    with zipfile.ZipFile(archive) as handle:
        assert handle.namelist() == ["results.json"]
        assert json.loads(handle.read("results.json")) == written


def test_results_writer_names_bad_entries(tmp_path):
    with pytest.raises(ValueError, match=r"results\[0\].*score"):
        write_results_json([{"video_id": 1, "category_id": 1, "score": None, "segmentations": []}], tmp_path / "r.json")


def test_split_is_by_video_seeded_and_covers_categories(tmp_path):
    videos = [(v, 6, 8, 2) for v in range(1, 41)]
    tracks = [{"id": v, "video_id": v, "category_id": 1 + v % 4, "masks": [A, None]} for v in range(1, 41)]
    tracks.append({"id": 100, "video_id": 3, "category_id": 9, "masks": [A, A]})
    tracks.append({"id": 101, "video_id": 17, "category_id": 9, "masks": [A, A]})
    data = gt_file(videos, [1, 2, 3, 4, 9], tracks)
    (tmp_path / "train.json").write_text(json.dumps(data))
    paths = split_annotations(tmp_path / "train.json", tmp_path / "split", val_fraction=0.25, seed=3)
    train, val = (json.loads(paths[k].read_text()) for k in ("train", "val"))
    train_ids, val_ids = {v["id"] for v in train["videos"]}, {v["id"] for v in val["videos"]}
    assert train_ids.isdisjoint(val_ids) and len(train_ids | val_ids) == 40
    assert 8 <= len(val_ids) <= 12  # 25% of 40, up to rounding per category
    for part, ids in ((train, train_ids), (val, val_ids)):
        assert all(a["video_id"] in ids for a in part["annotations"])
        assert {a["category_id"] for a in part["annotations"]} == {1, 2, 3, 4, 9}  # the rare one lands on both sides
    assert split_video_ids(data, 0.25, 3) == split_video_ids(data, 0.25, 3)
    assert split_video_ids(data, 0.25, 3) != split_video_ids(data, 0.25, 4)


def test_cli_evaluate_prints_table_writes_json_and_fails_cleanly(tmp_path, capsys):
    gt_path, res_path, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "m" / "metrics.json"
    gt_path.write_text(json.dumps(_gt()))
    res_path.write_text(json.dumps([result(1, 1, 0.9, [A, A]), result(1, 5, 0.9, [A, A])]))
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[1:6]] == ["AP", "AP50", "AP75", "AR1", "AR10"]
    metrics = json.loads(out.read_text())
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    assert all(k in metrics for k in keys) and metrics["APl"] == -1 and metrics["AP"] == pytest.approx(1.0)
    assert set(metrics["per_category"]) == {"cat1", "cat2"} and len(metrics["warnings"]) == 1
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path), "--strict"]) == 2
    assert "category_id 5" in capsys.readouterr().err
    res_path.write_text("[]")
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path)]) == 2
    assert "empty" in capsys.readouterr().err


def test_cli_split_annotations(tmp_path, capsys):
    data = gt_file(
        [(v, 6, 6, 1) for v in range(10)],
        [1],
        [{"id": v, "video_id": v, "category_id": 1, "masks": [A]} for v in range(10)],
    )
    (tmp_path / "train.json").write_text(json.dumps(data))
    assert main(["split-annotations", str(tmp_path / "train.json"), "--out-dir", str(tmp_path), "--seed", "1"]) == 0
    assert (tmp_path / "instances_val_sub.json").is_file() and "val: 1 videos" in capsys.readouterr().out
