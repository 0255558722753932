"""Bad input: warnings for what the official evaluator accepts silently, clear errors for what it cannot score."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from seqformer.pipelines.evaluation import evaluate, evaluate_files
from tests.pipelines.evaluation.cases import box, gt_file, result

A = box(6, 6, 0, 0, 3, 3)


@pytest.fixture
def gt():
    return gt_file([(1, 6, 6, 3)], [1], [{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 3}])


def test_unknown_category_is_dropped_with_a_warning_and_strict_raises(gt):
    results = [result(1, 1, 0.9, [A] * 3), result(1, 42, 0.95, [A] * 3)]
    metrics = evaluate(gt, results)
    assert metrics["AP"] == pytest.approx(1.0)
    assert any("results[1] (video_id=1)" in w and "category_id 42" in w for w in metrics["warnings"])
    with pytest.raises(ValueError, match=r"results\[1\].*category_id 42.*strict"):
        evaluate(gt, results, strict=True)


def test_wrong_frame_count_and_mask_size_are_warned(gt):
    long = result(1, 1, 0.9, [A] * 4)
    odd = result(1, 1, 0.8, [A, np.ones((5, 6), bool), A])
    warnings = evaluate(gt, [long, odd])["warnings"]
    assert any("results[0]" in w and "4 segmentations" in w for w in warnings)
    assert any("results[1]" in w and "(5, 6)" in w for w in warnings)


@pytest.mark.parametrize(
    ("results", "match"),
    [
        ([], "empty"),
        ({"video_id": 1}, "list"),
        ([result(9, 1, 0.9, [A] * 3)], r"results\[0\]: video_id 9 is not a video"),
        ([{"video_id": 1, "category_id": 1, "score": 0.5}], r"results\[0\].*missing \['segmentations'\]"),
        ([{"video_id": 1, "category_id": 1, "score": "high", "segmentations": []}], "score must be a number"),
        (
            [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [{"size": [6, 6], "counts": "a b!"}]}],
            r"results\[0\] \(video_id=1\) frame 0: RLE cannot be decoded",
        ),
        (
            [
                {
                    "video_id": 1,
                    "category_id": 1,
                    "score": 0.5,
                    "segmentations": [None, {"size": [6, 6], "counts": "1o"}],
                }
            ],
            r"frame 1: RLE cannot be decoded.*middle of a run",
        ),
        (
            [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [{"size": [6, 6], "counts": [36]}]}],
            "uncompressed list",
        ),
        ([{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [{"counts": "06"}]}], r"frame 0.*size"),
    ],
)
def test_unscorable_results_raise_naming_the_entry(gt, results, match):
    with pytest.raises(ValueError, match=match):
        evaluate(gt, results)


def test_files_plain_gz_missing_and_not_json(tmp_path, gt):
    results = [result(1, 1, 0.9, [A] * 3)]
    gt_path, res_path = tmp_path / "gt.json.gz", tmp_path / "res.json"
    with gzip.open(gt_path, "wt") as handle:
        json.dump(gt, handle)
    res_path.write_text(json.dumps(results))
    assert evaluate_files(gt_path, res_path)["AP"] == pytest.approx(1.0)
    gz_res_path = tmp_path / "res.json.gz"
    with gzip.open(gz_res_path, "wt") as handle:
        json.dump(results, handle)
    assert evaluate_files(gt_path, gz_res_path)["AP"] == pytest.approx(1.0)
    gz_res_path.write_bytes(gzip.compress(b"[{not json"))
    with pytest.raises(ValueError, match=r"res.json.gz.*not valid JSON"):
        evaluate_files(gt_path, gz_res_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json.*not valid JSON"):
        evaluate_files(gt_path, bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate_files(tmp_path / "missing.json", res_path)


def test_corrupt_ground_truth_rle_is_an_error(gt):
    gt["annotations"][0]["segmentations"][1]["counts"] = [1, 2]  # sums to 3, not 36
    with pytest.raises(ValueError, match=r"annotations\[0\].*frame 1.*sum to 3"):
        evaluate(gt, [result(1, 1, 0.9, [A] * 3)])
