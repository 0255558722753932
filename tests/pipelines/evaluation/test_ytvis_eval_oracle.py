"""The fast evaluator against the loop oracle on randomised cases (ties, crowd, absent frames, >100 predictions,
area limits, GT id 0; with ``malformed`` also unknown categories, wrong frame counts and mask sizes)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from seqformer.pipelines.evaluation import METRIC_KEYS, YTVISEvaluator, evaluate
from seqformer.pipelines.evaluation.accumulate import summarize
from tests.pipelines.evaluation.cases import random_case
from tests.pipelines.evaluation.oracle import oracle_evaluate


@pytest.mark.parametrize("malformed", [False, True])
@pytest.mark.parametrize("seed", range(25))
def test_all_twelve_numbers_and_per_category_match_the_oracle(seed, malformed, caplog):
    gt, results = random_case(seed, malformed)
    with caplog.at_level(logging.ERROR):
        metrics = evaluate(gt, results)
    stats, precision, recall, cat_ids = oracle_evaluate(gt, results)
    np.testing.assert_allclose([metrics[k] for k in METRIC_KEYS], stats, atol=1e-12, rtol=0)
    for k, cat in enumerate(cat_ids):
        expected = summarize(precision[:, :, k : k + 1], recall[:, k : k + 1])
        got = metrics["per_category"][f"cat{cat}"]
        np.testing.assert_allclose(
            [got[key] for key in METRIC_KEYS], [expected[key] for key in METRIC_KEYS], atol=1e-12, rtol=0
        )


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(25, 200))
def test_many_more_seeds_match_the_oracle(seed):
    gt, results = random_case(seed, malformed=seed % 2 == 1)
    metrics = evaluate(gt, results)
    np.testing.assert_allclose([metrics[k] for k in METRIC_KEYS], oracle_evaluate(gt, results)[0], atol=1e-12, rtol=0)


def test_evaluator_process_per_video_equals_evaluate_on_the_list():
    gt, results = random_case(3)
    evaluator = YTVISEvaluator(gt)
    evaluator.reset()
    for video_id in sorted({r["video_id"] for r in results}):
        evaluator.process(
            video_id,
            [
                {k: r[k] for k in ("category_id", "score", "segmentations")}
                for r in results
                if r["video_id"] == video_id
            ],
        )
    got = evaluator.evaluate()
    # process() reorders entries by video; file order only matters among equal scores of one (video, category),
    # which process keeps, and across videos ties go by video id anyway.
    expected = evaluate(gt, results)
    assert [got[k] for k in METRIC_KEYS] == [expected[k] for k in METRIC_KEYS]
    evaluator.reset()
    assert evaluator.results == []


def test_evaluator_encodes_mask_arrays():
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 1:4, 1:4] = True
    gt = {
        "videos": [{"id": 1, "height": 8, "width": 8, "length": 2}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [],
    }
    from tests.pipelines.evaluation.cases import uncompressed

    gt["annotations"].append(
        {
            "id": 1,
            "video_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "areas": [9, 9],
            "segmentations": [uncompressed(m) for m in masks],
        }
    )
    evaluator = YTVISEvaluator(gt)
    evaluator.process(1, [{"category_id": 1, "score": 0.7, "segmentations": masks}])
    assert evaluator.evaluate()["AP"] == pytest.approx(1.0)
    assert isinstance(evaluator.results[0]["segmentations"][0]["counts"], str)
