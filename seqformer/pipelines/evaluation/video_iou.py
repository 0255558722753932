"""Video-level mask IoU between ranked predictions and ground-truth tracks, exact and without decoding masks.

The official evaluator walks two per-frame lists together (Python ``zip``) and sums over frames: both present →
``I += |d∩g|``, ``U += |d∪g|``; only one present → ``U +=`` its area; IoU = I / U (0 when U = 0). Masks of different
sizes merge to an empty mask in pycocotools, so such a frame adds 0 to both sums.

Here one compiled call (``pair_sums`` in ``csrc/ytvis_eval.cpp``) computes the integer sums I and U for every pair of
every (video, category) by walking run lengths: each track frame is decoded once into foreground intervals, each
prediction frame once into a small buffer reused for all tracks of its problem, and only as far as the farthest track
interval it can meet. IoU = I / U in float64, the division the official code does on the same exact integers.
"""

from __future__ import annotations

import logging

import numpy as np

from seqformer.pipelines.evaluation._extension import load
from seqformer.pipelines.evaluation.detections import Detections
from seqformer.pipelines.evaluation.ground_truth import GroundTruth

logger = logging.getLogger(__name__)


def video_ious(dets: Detections, gt: GroundTruth, problems: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
    """Official video IoU for each problem (the ranked predictions and the tracks of one video and category).

    Args:
        dets: all parsed predictions.
        gt: the parsed ground truth.
        problems: per problem the prediction indices into ``dets`` (rank order) and the track indices
            (:attr:`GtTrack.index`, official order).

    Returns:
        per problem float64 ``[len(rows), len(tracks)]`` IoU = I / U per pair (0 where U = 0).
    """
    dt_counts = np.array([len(rows) for rows, _ in problems], dtype=np.int64)
    gt_counts = np.array([len(tracks) for _, tracks in problems], dtype=np.int64)
    flat_dts = np.fromiter((r for rows, _ in problems for r in rows), dtype=np.int64, count=int(dt_counts.sum()))
    flat_gts = np.fromiter((t for _, tracks in problems for t in tracks), dtype=np.int64, count=int(gt_counts.sum()))
    ious = pair_ious(dets, gt, dt_counts, flat_dts, gt_counts, flat_gts)
    bounds = _offsets(dt_counts * gt_counts)
    return [ious[bounds[p] : bounds[p + 1]].reshape(int(dt_counts[p]), int(gt_counts[p])) for p in range(len(problems))]


def pair_ious(
    dets: Detections,
    gt: GroundTruth,
    dt_counts: np.ndarray,
    dts: np.ndarray,
    gt_counts: np.ndarray,
    gts: np.ndarray,
) -> np.ndarray:
    """Official video IoU of every (prediction, track) pair of every problem, in one compiled call.

    Args:
        dets: all parsed predictions; gt: the parsed ground truth.
        dt_counts: int ``[P]`` predictions per problem; ``dts``: int ``[sum(dt_counts)]`` their indices into
            ``dets``, problem by problem, rank order within a problem.
        gt_counts: int ``[P]`` tracks per problem; ``gts``: int ``[sum(gt_counts)]`` their :attr:`GtTrack.index`,
            problem by problem, official order within a problem.

    Returns:
        float64 ``[sum(dt_counts * gt_counts)]``: problem by problem, each ``[D_p, G_p]`` row-major; I / U per pair
        (0 where U = 0).
    """
    dt_counts, gt_counts = np.asarray(dt_counts, dtype=np.int64), np.asarray(gt_counts, dtype=np.int64)
    total = int(np.sum(dt_counts * gt_counts))
    inter, union = np.zeros(total, dtype=np.int64), np.zeros(total, dtype=np.int64)
    d, g = dets.frames, gt.frames
    load().pair_sums(
        *(d.buf, d.start, d.length, d.height, d.width, d.area, d.offsets),
        *(g.buf, g.start, g.length, g.height, g.width, g.area, g.offsets),
        _offsets(dt_counts),
        np.ascontiguousarray(dts, dtype=np.int64),
        _offsets(gt_counts),
        np.ascontiguousarray(gts, dtype=np.int64),
        inter,
        union,
    )
    return np.divide(inter.astype(np.float64), union.astype(np.float64), out=np.zeros(total), where=union > 0)


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
