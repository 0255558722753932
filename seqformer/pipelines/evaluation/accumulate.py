"""Greedy matching, precision/recall accumulation and the 12-number summary of the official YouTube-VIS evaluator.

Axes: ``T`` IoU thresholds, ``R`` recall thresholds, ``K`` categories, ``A`` area ranges, ``M`` max-detection limits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# np.linspace values, not k/100: e.g. the 0.35 recall threshold is 0.35000000000000003, which changes AP.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# YouTube-VIS limits (128**2, 256**2), both ends inclusive.
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0**2, 1e5**2),
    "small": (0.0**2, 128.0**2),
    "medium": (128.0**2, 256.0**2),
    "large": (256.0**2, 1e5**2),
}
MAX_DETS = (1, 10, 100)
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class PairResult:
    """Matching output of one (video, category) for one area range.

    Attributes:
        scores: float64 ``[D]`` prediction scores in rank order.
        matched: bool ``[T, D]`` matched to a GT whose id is not 0 (the official "dtm != 0").
        ignored: bool ``[T, D]`` neither TP nor FP.
        num_positive_gts: GTs that are not ignored in this area range.
    """

    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_positive_gts: int


def out_of_range(values: np.ndarray, area: tuple[float, float]) -> np.ndarray:
    """bool, True where a mean area lies outside the inclusive range."""
    return (values < area[0]) | (values > area[1])


def match(
    ious: np.ndarray, gt_ids: list[object], gt_crowd: list[bool], gt_ignore: list[bool]
) -> tuple[np.ndarray, ...]:
    """Greedy per-threshold matching of ranked predictions to GTs, exactly as the official ``evaluateVid``.

    GTs are taken non-ignored first (stable); each prediction takes the free GT (crowd GTs are always free) with the
    highest IoU >= t, the later GT winning ties; once a non-ignored GT is found, ignored ones are not considered.

    Args:
        ious: float64 ``[D, G]`` video IoUs, rows in rank order, columns in GT order.
        gt_ids: annotation id per GT (a match to id 0 does not count as a match).
        gt_crowd: ``int(iscrowd) != 0`` per GT.
        gt_ignore: whether each GT is ignored in this area range.

    Returns:
        ``matched`` bool ``[T, D]`` (matched to a GT with non-zero id), ``matched_ignored`` bool ``[T, D]`` (matched
        to an ignored GT).
    """
    num_dets, num_gts = ious.shape
    matched = np.zeros((len(IOU_THRESHOLDS), num_dets), dtype=bool)
    matched_ignored = np.zeros_like(matched)
    if num_dets == 0 or num_gts == 0:
        return matched, matched_ignored
    order = np.argsort(np.asarray(gt_ignore, dtype=np.int64), kind="mergesort").tolist()
    ignore = [gt_ignore[g] for g in order]
    crowd = [gt_crowd[g] for g in order]
    nonzero_id = [gt_ids[g] != 0 for g in order]
    rows = ious[:, order].tolist()
    best_per_row = ious.max(axis=1).tolist()
    taken = [[False] * num_gts for _ in IOU_THRESHOLDS]
    thresholds = [min(float(t), 1 - 1e-10) for t in IOU_THRESHOLDS]
    for d, row in enumerate(rows):
        if best_per_row[d] < thresholds[0]:
            continue  # below every threshold: cannot match anything
        for t, threshold in enumerate(thresholds):
            best, m = threshold, -1
            taken_t = taken[t]
            for g in range(num_gts):
                if taken_t[g] and not crowd[g]:
                    continue
                if m > -1 and not ignore[m] and ignore[g]:
                    break
                if row[g] < best:
                    continue
                best, m = row[g], g
            if m == -1:
                continue
            taken_t[m] = True
            matched[t, d] = nonzero_id[m]
            matched_ignored[t, d] = ignore[m]
    return matched, matched_ignored


def accumulate(per_category: list[list[list[PairResult]]]) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall tables.

    Args:
        per_category: ``[K][A]`` lists of :class:`PairResult`, one per (video, category) that has a GT or a prediction,
            videos in ascending id order.

    Returns:
        precision float64 ``[T, R, K, A, M]`` and recall float64 ``[T, K, A, M]``; -1 where a category has no
        non-ignored GT.
    """
    num_t, num_r, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(MAX_DETS)
    num_k, num_a = len(per_category), len(AREA_RANGES)
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    for k, by_area in enumerate(per_category):
        for a, pairs in enumerate(by_area):
            num_positive = sum(p.num_positive_gts for p in pairs)
            if not pairs or num_positive == 0:
                continue
            scores = np.concatenate([p.scores for p in pairs])
            ranks = np.concatenate([np.arange(len(p.scores)) for p in pairs])
            matched = np.concatenate([p.matched for p in pairs], axis=1)
            ignored = np.concatenate([p.ignored for p in pairs], axis=1)
            for m, max_det in enumerate(MAX_DETS):
                keep = ranks < max_det
                order = np.argsort(-scores[keep], kind="mergesort")
                pr, rc = _curves(matched[:, keep][:, order], ignored[:, keep][:, order], num_positive)
                recall[:, k, a, m] = rc[:, -1] if rc.shape[1] else 0.0
                precision[:, :, k, a, m] = _sample(pr, rc)
    return precision, recall


def _curves(matched: np.ndarray, ignored: np.ndarray, num_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision (made non-increasing from the right) and recall after each ranked prediction. ``[T, N]`` each."""
    tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    rc = tp_sum / num_positive
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    return pr, rc


def _sample(pr: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """Precision at each recall threshold: first position with recall >= r; 0 above the highest recall. ``[T, R]``."""
    out = np.zeros((pr.shape[0], len(RECALL_THRESHOLDS)))
    for t in range(pr.shape[0]):
        positions = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
        valid = positions < pr.shape[1]
        out[t, valid] = pr[t, positions[valid]]
    return out


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """The 12 official numbers (fractions; -1 where no category has a non-ignored GT in that setting).

    Args:
        precision: ``[T, R, K, A, M]`` from :func:`accumulate` (K may be one category).
        recall: ``[T, K, A, M]``.
    """
    areas = list(AREA_RANGES)

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(np.mean(valid)) if valid.size else -1.0

    def ap(iou: float | None = None, area: str = "all") -> float:
        s = precision if iou is None else precision[np.where(iou == IOU_THRESHOLDS)[0]]
        return mean(s[:, :, :, areas.index(area), MAX_DETS.index(100)])

    def ar(max_det: int, area: str = "all") -> float:
        return mean(recall[:, :, areas.index(area), MAX_DETS.index(max_det)])

    values = [
        ap(),
        ap(0.5),
        ap(0.75),
        ap(area="small"),
        ap(area="medium"),
        ap(area="large"),
        ar(1),
        ar(10),
        ar(100),
        ar(100, "small"),
        ar(100, "medium"),
        ar(100, "large"),
    ]
    return dict(zip(METRIC_KEYS, values))
