"""Hand-computed YouTube-VIS cases: every number below is worked out in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from seqformer.pipelines.evaluation import METRIC_KEYS, evaluate
from tests.pipelines.evaluation.cases import box, gt_file, result, rle
from tests.pipelines.evaluation.oracle import oracle_evaluate

H, W = 8, 8
A = box(H, W, 0, 0, 2, 2)  # 4 px
B = box(H, W, 4, 4, 6, 6)  # 4 px
C = box(H, W, 2, 4, 4, 6)  # 4 px
EMPTY = np.zeros((H, W), bool)


def _gt(tracks, videos=((1, H, W, 4),), categories=(1,)):
    return gt_file(list(videos), list(categories), tracks)


def _check(metrics, expected, gt, results):
    """Compare with the hand numbers and with the loop oracle."""
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    reference = oracle_evaluate(gt, results)[0]
    np.testing.assert_allclose([metrics[k] for k in METRIC_KEYS], reference, atol=1e-12, rtol=0)


def test_video_iou_is_one_ratio_of_sums_over_frames():
    # GT [A, B, -, C]; prediction [A, -, empty, C]: I = 4 + 0 + 0 + 4 = 8, U = 4 + 4 + 0 + 4 = 12, IoU = 2/3.
    # (The mean of per-frame IoUs would be 2/3 too over the frames where both exist, but frame 1 enlarges U.)
    # 2/3 passes thresholds .50 .55 .60 .65 (4 of 10): AP = 0.4, AP50 = 1, AP75 = 0, AR = 0.4.
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A, B, None, C]}])
    results = [result(1, 1, 0.9, [A, None, EMPTY, C])]
    metrics = evaluate(gt, results)
    _check(
        metrics,
        {"AP": 0.4, "AP50": 1.0, "AP75": 0.0, "AR1": 0.4, "AR100": 0.4, "APs": 0.4, "APm": -1, "APl": -1},
        gt,
        results,
    )
    assert metrics["warnings"] == []


def test_prediction_shorter_than_video_only_pairs_its_own_frames():
    # zip pairing: prediction [A, -, empty] leaves GT frame 3 out of the union: I = 4, U = 8, IoU = 0.5 → only t=.50.
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A, B, None, C]}])
    results = [result(1, 1, 0.9, [A, None, EMPTY])]
    metrics = evaluate(gt, results)
    _check(metrics, {"AP": 0.1, "AP50": 1.0, "AR100": 0.1}, gt, results)
    assert any("results[0] (video_id=1)" in w and "3 segmentations" in w for w in metrics["warnings"])


def test_crowd_track_absorbs_predictions_and_crowd_only_category_is_minus_one():
    # category 1: crowd track (B everywhere) and a normal track (A). p1, p2 match the crowd (IoU 1, ignored, neither
    # TP nor FP), p3 matches A: precision 1 at recall 1 → AP 1. Category 2 has only a crowd track → -1, left out.
    gt = _gt(
        [
            {"id": 1, "video_id": 1, "category_id": 1, "masks": [B] * 4, "iscrowd": 1},
            {"id": 2, "video_id": 1, "category_id": 1, "masks": [A] * 4},
            {"id": 3, "video_id": 1, "category_id": 2, "masks": [C] * 4, "iscrowd": 1},
        ],
        categories=(1, 2),
    )
    results = [
        result(1, 1, 0.9, [B] * 4),
        result(1, 1, 0.8, [B] * 4),
        result(1, 1, 0.7, [A] * 4),
        result(1, 2, 0.9, [C] * 4),
    ]
    metrics = evaluate(gt, results)
    _check(metrics, {"AP": 1.0, "AR1": 0.0, "AR10": 1.0}, gt, results)  # AR1: only p1 kept, and it is ignored
    assert metrics["per_category"]["cat2"]["AP"] == -1


def test_prediction_in_video_without_ground_truth_is_a_false_positive():
    # video 1: perfect p (0.5); video 2 (no GT): q (0.9). Ranked q, p: precision [0, .5] → envelope .5 everywhere,
    # recall 1 → AP = 0.5; AR1 = 1 (maxDets are per (video, category)).
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 4}], videos=((1, H, W, 4), (2, H, W, 4)))
    results = [result(1, 1, 0.5, [A] * 4), result(2, 1, 0.9, [A] * 4)]
    _check(evaluate(gt, results), {"AP": 0.5, "AP50": 0.5, "AR1": 1.0}, gt, results)


@pytest.mark.parametrize("perfect_first", [False, True])
def test_top_100_cut_before_matching_with_ties_settled_by_file_order(perfect_first):
    # 101 predictions with equal scores: 100 disjoint from the GT, one perfect. The stable sort keeps file order and the
    # cut keeps the first 100: perfect last → never matched (AP 0, AR100 0); perfect first → ranked first (AP 1).
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 4}])
    misses = [result(1, 1, 0.5, [B] * 4) for _ in range(100)]
    perfect = result(1, 1, 0.5, [A] * 4)
    results = [perfect] + misses if perfect_first else misses + [perfect]
    expected = 1.0 if perfect_first else 0.0
    _check(evaluate(gt, results), {"AP": expected, "AR100": expected, "AR1": expected}, gt, results)


def test_equal_scores_across_videos_go_by_video_id():
    # Videos listed 7 then 3. Same score in both: video 3's FP ranks before video 7's TP → precision [0, .5] → AP .5.
    gt = _gt([{"id": 1, "video_id": 7, "category_id": 1, "masks": [A] * 4}], videos=((7, H, W, 4), (3, H, W, 4)))
    results = [result(7, 1, 0.5, [A] * 4), result(3, 1, 0.5, [A] * 4)]
    _check(evaluate(gt, results), {"AP": 0.5}, gt, results)


def test_empty_predicted_masks_score_like_null_frames_and_count_as_small():
    # An all-empty prediction has IoU 0 and mean area 0 (small range): FP in "all" and "small".
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 4}])
    results = [result(1, 1, 0.9, [EMPTY] * 4), result(1, 1, 0.8, [A] * 4)]
    # ranked FP, TP → precision .5 at every recall threshold → AP .5; AR1 = 0 (only the empty one kept).
    metrics = evaluate(gt, results)
    _check(metrics, {"AP": 0.5, "APs": 0.5, "AR1": 0.0, "AR10": 1.0}, gt, results)
    null_results = [result(1, 1, 0.9, [None] * 4), result(1, 1, 0.8, [A] * 4)]
    assert evaluate(gt, null_results)["AP"] == metrics["AP"]


def test_category_without_ground_truth_is_minus_one_and_not_averaged():
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 4}], categories=(1, 2))
    results = [result(1, 1, 0.9, [A] * 4), result(1, 2, 0.9, [A] * 4)]
    metrics = evaluate(gt, results)
    _check(metrics, {"AP": 1.0, "AR100": 1.0}, gt, results)
    assert all(v == -1 for v in metrics["per_category"]["cat2"].values())
    assert metrics["per_category"]["cat1"]["AP"] == pytest.approx(1.0)  # 1 / (1 + eps), as official


def test_area_limits_are_inclusive_and_gt_area_comes_from_the_areas_field():
    # The GT's areas field says 16384 = 128**2 (its masks are tiny): it is both small and medium. The prediction
    # inherits the GT's flag when matched. Large has no GT → -1.
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A] * 4, "areas": [16384, None, 0, 16384]}])
    results = [result(1, 1, 0.9, [A] * 4)]
    _check(evaluate(gt, results), {"APs": 1.0, "APm": 1.0, "APl": -1, "ARm": 1.0}, gt, results)


def test_gt_id_zero_and_equal_iou_later_gt_wins():
    # Two identical GT tracks, ids 5 then 0. p1 ties on IoU → takes the later one (id 0) → counted as a FP; p2 takes
    # id 5 → TP. Ranked FP, TP with 2 positives: precision .5 up to recall .5 (51 of 101 thresholds) → AP = .5*51/101.
    gt = _gt(
        [
            {"id": 5, "video_id": 1, "category_id": 1, "masks": [A] * 4},
            {"id": 0, "video_id": 1, "category_id": 1, "masks": [A] * 4},
        ]
    )
    results = [result(1, 1, 0.9, [A] * 4), result(1, 1, 0.8, [A] * 4)]
    metrics = evaluate(gt, results)
    _check(metrics, {"AP": 0.5 * 51 / 101, "AR100": 0.5}, gt, results)
    assert any("annotation id 0" in w for w in metrics["warnings"])


def test_mask_size_mismatch_adds_nothing_to_intersection_or_union():
    # Frame 1 of the prediction is 9x8: that frame adds 0 to I and U, so IoU = (4+4+4)/(4+4+4) = 1 despite it.
    gt = _gt([{"id": 1, "video_id": 1, "category_id": 1, "masks": [A, B, C, A]}])
    entry = result(1, 1, 0.9, [A, B, C, A])
    entry["segmentations"][1] = rle(np.ones((H + 1, W), bool))
    metrics = evaluate(gt, [entry])
    _check(metrics, {"AP": 1.0}, gt, [entry])
    assert any("results[0] (video_id=1)" in w and "(9, 8)" in w for w in metrics["warnings"])
