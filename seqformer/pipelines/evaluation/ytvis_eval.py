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
from seqformer.pipelines.evaluation.ground_truth import GroundTruth, GtTrack, parse_ground_truth
from seqformer.pipelines.evaluation.io import PathLike, Problems, load_json
from seqformer.pipelines.evaluation.video_iou import video_ious

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
    gt = parse_ground_truth(load_json(gt_path, "ground-truth file"), problems, str(gt_path))
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
    """Rank, match and accumulate: precision ``[T, R, K, A, M]``, recall ``[T, K, A, M]``."""
    areas = list(acc.AREA_RANGES.values())
    ranked = _rank(gt, dets)
    dt_outside = np.stack([acc.out_of_range(dets.avg_areas, area) for area in areas])  # [A, num_entries]
    per_category: list[list[list[acc.PairResult]]] = [[[] for _ in areas] for _ in gt.category_ids]
    category_index = {c: k for k, c in enumerate(gt.category_ids)}
    keys = [
        (video_id, c)
        for video_id in gt.video_ids
        for c in gt.category_ids
        if (video_id, c) in ranked or (video_id, c) in gt.tracks
    ]
    both = [key for key in keys if key in ranked and key in gt.tracks]
    # One compiled call for every (video, category) with predictions and tracks; pairs across categories are never
    # used, so they are never computed.
    blocks = video_ious(dets, gt, [(ranked[key], [t.index for t in gt.tracks[key]]) for key in both])
    ious = dict(zip(both, blocks))
    for key in keys:
        rows, tracks = ranked.get(key, []), gt.tracks.get(key, [])
        results = _pair_results(dets, rows, tracks, ious.get(key), areas, dt_outside)
        for a, result in enumerate(results):
            per_category[category_index[key[1]]][a].append(result)
    return acc.accumulate(per_category)


def _rank(gt: GroundTruth, dets: Detections) -> dict[tuple[Any, Any], list[int]]:
    """Per (video, category) the prediction indices by descending score (stable), cut to the top 100."""
    ranked = {}
    for key, indices in dets.groups.items():
        order = np.argsort(-dets.scores[indices], kind="mergesort")[:MAX_PER_PAIR]
        ranked[key] = [indices[i] for i in order]
    return ranked


def _pair_results(
    dets: Detections,
    rows: list[int],
    tracks: list[GtTrack],
    ious: np.ndarray | None,
    areas: list[tuple[float, float]],
    dt_outside: np.ndarray,
) -> list[acc.PairResult]:
    """Matching of one (video, category) in every area range (``dt_outside``: bool ``[A, num_entries]``)."""
    scores = dets.scores[rows]
    if not tracks:  # nothing to match: every prediction is a FP unless its area is out of range
        unmatched = np.zeros((len(acc.IOU_THRESHOLDS), len(rows)), dtype=bool)
        return [
            acc.PairResult(scores, unmatched, dt_outside[a, rows][None, :].repeat(len(unmatched), 0), 0)
            for a in range(len(areas))
        ]
    gt_avg = np.array([t.avg_area for t in tracks], dtype=np.float64)
    ids, crowd = [t.ann_id for t in tracks], [t.crowd for t in tracks]
    if ious is None:
        ious = np.zeros((len(rows), len(tracks)))
    cache: dict[tuple[bool, ...], tuple[np.ndarray, np.ndarray]] = {}
    out = []
    for a, area in enumerate(areas):
        gt_ignore = tuple(bool(t.ignore or o) for t, o in zip(tracks, acc.out_of_range(gt_avg, area)))
        if gt_ignore not in cache:
            cache[gt_ignore] = acc.match(ious, ids, crowd, list(gt_ignore))
        matched, matched_ignored = cache[gt_ignore]
        ignored = matched_ignored | (~matched & dt_outside[a, rows][None, :])
        out.append(acc.PairResult(scores, matched, ignored, gt_ignore.count(False)))
    return out


def _per_category(gt: GroundTruth, precision: np.ndarray, recall: np.ndarray) -> dict[str, dict[str, float]]:
    names = [gt.category_names[c] for c in gt.category_ids]
    out = {}
    for k, category in enumerate(gt.category_ids):
        key = names[k] if names.count(names[k]) == 1 else str(category)
        out[key] = acc.summarize(precision[:, :, k : k + 1], recall[:, k : k + 1])
    return out
