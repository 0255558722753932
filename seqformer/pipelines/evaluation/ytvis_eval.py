"""YouTube-VIS evaluation with the official evaluator's numbers, computed faster.

Public API:

* :func:`evaluate_files` — score a results JSON against an annotation JSON (``.json`` or ``.json.gz``).
* :func:`evaluate` — the same on parsed objects (annotation dict, results list).
* :class:`YTVISEvaluator` — detectron2-style ``reset`` / ``process`` / ``evaluate`` for the training loop.

All return ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"`` (fractions,
-1 where the official evaluator gives -1), ``"per_category": {name: {the 12 numbers}}``, ``"warnings": [...]}``.

Semantics are those of the official youtubevos/cocoapi ``ytvoseval.py`` (see ``shared/design/ytvis-eval.md``): the unit
is the (video, category) pair, IoU is one ratio of per-frame sums over the whole video, area ranges use the mean
non-zero area with YouTube-VIS limits, predictions are ranked with a stable sort and cut to 100 per (video, category)
before matching, and every documented quirk (inclusive ranges, later-GT-wins ties, GT id 0, zip frame pairing, mask
size mismatch, crowd tracks absorbing many predictions) is reproduced. Malformed input the official code accepts is
scored the same way and reported as a warning (an error with ``strict=True``); input it cannot score raises
ValueError naming the entry.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from seqformer.pipelines.evaluation import accumulate as acc
from seqformer.pipelines.evaluation import rle as rle_utils
from seqformer.pipelines.evaluation.detections import Detections, parse_results, read_results_file
from seqformer.pipelines.evaluation.ground_truth import GroundTruth, parse_ground_truth, read_ground_truth_file
from seqformer.pipelines.evaluation.io import PathLike, Problems, load_json
from seqformer.pipelines.evaluation.video_iou import pair_ious

logger = logging.getLogger(__name__)

MAX_PER_PAIR = acc.MAX_DETS[-1]


def evaluate_files(gt_path: PathLike, results_path: PathLike, strict: bool = False) -> dict[str, Any]:
    """Score a YouTube-VIS results file against an annotation file.

    Args:
        gt_path: annotation JSON (``videos``, ``categories``, ``annotations``), optionally gzipped.
        results_path: results JSON list, optionally gzipped.
        strict: raise on malformed entries instead of warning.

    Returns:
        the 12 numbers, ``per_category`` and ``warnings`` (see the module docstring).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not JSON or cannot be scored.
    """
    problems = Problems(strict)
    gt = read_ground_truth_file(gt_path, problems, str(gt_path))
    dets = read_results_file(results_path, gt, problems, str(results_path))
    return _score(gt, dets, problems)


def evaluate(
    gt: dict[str, Any] | GroundTruth,
    results: list[dict[str, Any]],
    *,
    strict: bool = False,
    gt_source: str = "ground truth",
    results_source: str = "results",
) -> dict[str, Any]:
    """Score parsed results against parsed (or already indexed) ground truth; see :func:`evaluate_files`."""
    problems = Problems(strict)
    if not isinstance(gt, GroundTruth):
        gt = parse_ground_truth(gt, problems, gt_source)
    else:
        problems.messages.extend(gt.problems)
    dets = parse_results(results, gt, problems, results_source)
    return _score(gt, dets, problems)


def _score(gt: GroundTruth, dets: Detections, problems: Problems) -> dict[str, Any]:
    precision, recall = _precision_recall(gt, dets)
    summary: dict[str, Any] = acc.summarize(precision, recall)
    summary["per_category"] = _per_category(gt, precision, recall)
    summary["warnings"] = list(problems.messages)
    return summary


class YTVISEvaluator:
    """Collects predictions video by video and scores them with the official semantics.

    Args:
        gt: annotation dict or path (``.json`` / ``.json.gz``).
        strict: raise on malformed predictions instead of warning.

    Example::

        evaluator = YTVISEvaluator("instances_val_sub.json")
        evaluator.reset()
        for video_id, predictions in model_outputs:
            evaluator.process(video_id, predictions)  # [{"category_id", "score", "segmentations"}, ...]
        metrics = evaluator.evaluate()
    """

    def __init__(self, gt: dict[str, Any] | PathLike, strict: bool = False) -> None:
        source = "ground truth"
        if not isinstance(gt, dict):
            source, gt = str(gt), load_json(gt, "ground-truth file")
        self.strict = strict
        self.gt = parse_ground_truth(gt, Problems(strict), source)
        self._results: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Forget the predictions processed so far."""
        self._results = []

    def process(self, video_id: Any, predictions: list[dict[str, Any]]) -> None:
        """Add the predictions of one video.

        Args:
            video_id: a video id of the ground truth.
            predictions: dicts with ``category_id``, ``score`` and ``segmentations``: one compressed RLE or None per
                frame, or a bool/uint8 array ``[num_frames, height, width]`` (numpy or torch) that is encoded here.
        """
        for prediction in predictions:
            segs = prediction["segmentations"]
            if hasattr(segs, "ndim"):  # a mask stack: numpy array or torch tensor
                segs = rle_utils.encode_masks(np.asarray(segs.cpu() if hasattr(segs, "cpu") else segs))
            self._results.append(
                {
                    "video_id": video_id,
                    "category_id": prediction["category_id"],
                    "score": float(prediction["score"]),
                    "segmentations": segs,
                }
            )

    @property
    def results(self) -> list[dict[str, Any]]:
        """The YouTube-VIS results list built so far (what :func:`write_results_json` writes)."""
        return self._results

    def evaluate(self) -> dict[str, Any]:
        """Score everything processed since the last :meth:`reset`; see :func:`evaluate_files` for the keys."""
        return evaluate(self.gt, self._results, strict=self.strict, results_source="predictions")


def _precision_recall(gt: GroundTruth, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Rank, match and accumulate: precision ``[T, R, K, A, M]``, recall ``[T, K, A, M]``.

    Every (video, category) with a track or a prediction is one problem; problems are laid out video by video (ascending
    ids), categories ascending within a video, so each category's entries come out in the official concatenation order
    (videos ascending, rank order within a video).
    """
    num_k = len(gt.category_ids)
    video_pos = {v: i for i, v in enumerate(gt.video_ids)}
    category_pos = {c: k for k, c in enumerate(gt.category_ids)}
    rows, dt_codes = _rank(dets, video_pos, category_pos, num_k)
    gt_keys = sorted(gt.tracks, key=lambda key: (video_pos[key[0]], category_pos[key[1]]))
    tracks = [t for key in gt_keys for t in gt.tracks[key]]
    gt_codes = np.array(
        [video_pos[v] * num_k + category_pos[c] for v, c in gt_keys for _ in gt.tracks[(v, c)]], dtype=np.int64
    )
    codes = np.sort(np.concatenate([dt_codes, gt_codes]))
    codes = codes[np.concatenate([[True], codes[1:] != codes[:-1]])] if len(codes) else codes  # the problems, in order
    dt_counts = np.bincount(np.searchsorted(codes, dt_codes), minlength=len(codes))
    gt_counts = np.bincount(np.searchsorted(codes, gt_codes), minlength=len(codes))
    track_index = np.array([t.index for t in tracks], dtype=np.int64)
    ious = pair_ious(dets, gt, dt_counts, rows, gt_counts, track_index)

    areas = list(acc.AREA_RANGES.values())
    gt_avg = np.array([t.avg_area for t in tracks], dtype=np.float64)
    gt_flag = np.array([t.ignore for t in tracks], dtype=bool)
    gt_ignore = np.stack([gt_flag | acc.out_of_range(gt_avg, area) for area in areas]) if tracks else None
    matched, matched_ignored = acc.match_all(
        ious,
        dt_counts,
        gt_counts,
        gt_ignore if gt_ignore is not None else np.zeros((len(areas), 0), dtype=bool),
        np.array([t.crowd for t in tracks], dtype=bool),
        np.array([t.ann_id != 0 for t in tracks], dtype=bool),
        len(areas),
    )
    dt_outside = np.stack([acc.out_of_range(dets.avg_areas[rows], area) for area in areas])  # [A, N]
    ignored = matched_ignored | (~matched & dt_outside[:, None, :])
    entry_category = np.repeat(codes % num_k, dt_counts)
    ranks = np.arange(len(rows)) - np.repeat(np.cumsum(dt_counts) - dt_counts, dt_counts)
    num_positive = np.zeros((num_k, len(areas)), dtype=np.int64)
    if gt_ignore is not None:
        for a in range(len(areas)):
            num_positive[:, a] = np.bincount(gt_codes % num_k, weights=~gt_ignore[a], minlength=num_k)
    return acc.accumulate(dets.scores[rows], ranks, entry_category, matched, ignored, num_positive)


def _rank(
    dets: Detections, video_pos: dict[Any, int], category_pos: dict[Any, int], num_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Entries of known categories grouped by problem code (``video position * K + category position``), each group by
    descending score (stable, so ties keep file order) and cut to the top 100.

    Returns:
        int64 ``[N]`` entry indices and int64 ``[N]`` their problem codes, in that order.
    """
    videos = np.fromiter((video_pos[v] for v in dets.video_ids), dtype=np.int64, count=len(dets.video_ids))
    categories = np.fromiter(
        (category_pos.get(c, -1) for c in dets.category_ids), dtype=np.int64, count=len(dets.category_ids)
    )
    codes = np.where(categories >= 0, videos * num_k + categories, -1)  # -1: a category the GT does not list
    by_score = np.argsort(-dets.scores, kind="stable")
    order = by_score[np.argsort(codes[by_score], kind="stable")]
    order = order[codes[order] >= 0]
    sorted_codes = codes[order]
    first = np.searchsorted(sorted_codes, sorted_codes, side="left")
    keep = np.arange(len(order)) - first < MAX_PER_PAIR
    return order[keep], sorted_codes[keep]


def _per_category(gt: GroundTruth, precision: np.ndarray, recall: np.ndarray) -> dict[str, dict[str, float]]:
    names = [gt.category_names[c] for c in gt.category_ids]
    out = {}
    for k, category in enumerate(gt.category_ids):
        key = names[k] if names.count(names[k]) == 1 else str(category)
        out[key] = acc.summarize(precision[:, :, k : k + 1], recall[:, k : k + 1])
    return out
