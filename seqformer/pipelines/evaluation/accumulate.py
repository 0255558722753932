"""Greedy matching, precision/recall accumulation and the 12-number summary of the official YouTube-VIS evaluator.

Axes: ``T`` IoU thresholds, ``R`` recall thresholds, ``K`` categories, ``A`` area ranges, ``M`` max-detection limits.
"""

from __future__ import annotations

import logging

import numpy as np

from seqformer.pipelines.evaluation._extension import load

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


def out_of_range(values: np.ndarray, area: tuple[float, float]) -> np.ndarray:
    """bool, True where a mean area lies outside the inclusive range."""
    return (values < area[0]) | (values > area[1])


def match_all(
    ious: np.ndarray,
    dt_counts: np.ndarray,
    gt_counts: np.ndarray,
    gt_ignore: np.ndarray,
    gt_crowd: np.ndarray,
    gt_nonzero: np.ndarray,
    num_areas: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy per-threshold matching of every problem (a video and category), exactly as the official ``evaluateVid``.

    GTs are taken non-ignored first (stable); each prediction takes the free GT (crowd GTs are always free) with the
    highest IoU >= t, the later GT winning ties; once a non-ignored GT is found, ignored ones are not considered. One
    compiled call (``match_problems`` in ``csrc/ytvis_eval.cpp``) for all problems, area ranges and thresholds.

    Args:
        ious: float64 ``[sum(dt_counts * gt_counts)]`` video IoUs, problem by problem, each ``[D_p, G_p]`` row-major
            (rows in rank order, columns in GT order).
        dt_counts: int ``[P]`` ranked predictions per problem (entries laid out problem by problem).
        gt_counts: int ``[P]`` GTs per problem (laid out the same way).
        gt_ignore: bool ``[A, G]`` whether each GT is ignored in each area range.
        gt_crowd: bool ``[G]`` ``int(iscrowd) != 0``.
        gt_nonzero: bool ``[G]`` annotation id is not 0 (a match to id 0 does not count as a match).
        num_areas: ``A``.

    Returns:
        ``matched`` bool ``[A, T, D]`` (matched to a GT with non-zero id), ``matched_ignored`` bool ``[A, T, D]``
        (matched to an ignored GT).
    """
    num_dets = int(np.sum(dt_counts))
    matched = np.zeros((num_areas, len(IOU_THRESHOLDS), num_dets), dtype=np.int8)
    matched_ignored = np.zeros_like(matched)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)
    load().match_problems(
        np.ascontiguousarray(ious, dtype=np.float64),
        _offsets(dt_counts),
        _offsets(gt_counts),
        np.ascontiguousarray(gt_ignore, dtype=np.int8),
        np.ascontiguousarray(gt_crowd, dtype=np.int8),
        np.ascontiguousarray(gt_nonzero, dtype=np.int8),
        np.ascontiguousarray(thresholds, dtype=np.float64),
        matched,
        matched_ignored,
    )
    return matched.view(bool), matched_ignored.view(bool)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def accumulate(
    scores: np.ndarray,
    ranks: np.ndarray,
    categories: np.ndarray,
    matched: np.ndarray,
    ignored: np.ndarray,
    num_positive: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall tables.

    Args:
        scores: float64 ``[N]`` per matched entry (a ranked prediction of one video and category) its score; within a
            category, entries are in the official concatenation order (videos ascending, rank order within a video).
        ranks: int ``[N]`` rank of each entry within its video and category (0 first).
        categories: int ``[N]`` category index ``k`` of each entry.
        matched: bool ``[A, T, N]`` matched to a GT with non-zero id.
        ignored: bool ``[A, T, N]`` neither TP nor FP.
        num_positive: int ``[K, A]`` GTs that are not ignored, per category and area range.

    Returns:
        precision float64 ``[T, R, K, A, M]`` and recall float64 ``[T, K, A, M]``; -1 where a category has no
        non-ignored GT.
    """
    num_t, num_r, num_m = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(MAX_DETS)
    num_k, num_a = num_positive.shape
    precision = -np.ones((num_t, num_r, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    by_category = np.argsort(categories, kind="stable")  # keeps the concatenation order within a category
    bounds = np.searchsorted(categories[by_category], np.arange(num_k + 1), side="left")
    for k in range(num_k):
        areas = np.flatnonzero(num_positive[k] > 0)
        if not areas.size:
            continue
        entries = by_category[bounds[k] : bounds[k + 1]]
        # One stable sort by score serves every maxDet: dropping entries keeps the others' relative order.
        entries = entries[np.argsort(-scores[entries], kind="mergesort")]
        for m, max_det in enumerate(MAX_DETS):
            kept = entries[ranks[entries] < max_det]
            pr, rc = _curves(matched[areas][:, :, kept], ignored[areas][:, :, kept], num_positive[k, areas])
            for i, a in enumerate(areas):
                recall[:, k, a, m] = rc[i, :, -1] if len(kept) else 0.0
                precision[:, :, k, a, m] = _sample(pr[i], rc[i])
    return precision, recall


def _curves(matched: np.ndarray, ignored: np.ndarray, num_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision (made non-increasing from the right) and recall after each ranked prediction. ``[A', T, N]`` each,
    for ``matched`` / ``ignored`` bool ``[A', T, N]`` and ``num_positive`` int ``[A']``."""
    tp_sum = np.cumsum(matched & ~ignored, axis=2).astype(np.float64)
    fp_sum = np.cumsum(~matched & ~ignored, axis=2).astype(np.float64)
    rc = tp_sum / num_positive[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
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
