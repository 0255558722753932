"""Video-level mask IoU between ranked predictions and ground-truth tracks of one video, without decoding masks.

The official evaluator walks two per-frame lists together (Python ``zip``) and sums over frames: both present →
``I += |d∩g|``, ``U += |d∪g|``; only one present → ``U +=`` its area; IoU = I / U (0 when U = 0). Masks of different
sizes merge to an empty mask in pycocotools, so such a frame adds 0 to both sums.

Here each frame costs one C call (``pycocotools`` ``iou``) for all predictions × all tracks of the video; the
integer intersection is recovered from the IoU and the two areas (``I = iou * (a_d + a_g) / (1 + iou)``, exact after
rounding since counts are far below 2**53), and the union follows from prefix sums of areas, so every sum is the same
exact integer the official code accumulates in float64.
"""

from __future__ import annotations

import logging
from itertools import compress
from typing import Any

import numpy as np
from pycocotools import _mask as coco_mask

from seqformer.pipelines.evaluation.detections import Detections
from seqformer.pipelines.evaluation.ground_truth import GtTrack

logger = logging.getLogger(__name__)


def video_ious(dets: Detections, rows: list[int], tracks: list[GtTrack]) -> np.ndarray:
    """Official video IoU between predictions and tracks of one video.

    Args:
        dets: all parsed predictions.
        rows: indices into ``dets`` (the ranked predictions of the video, any categories).
        tracks: ground-truth tracks of the same video.

    Returns:
        float64 ``[len(rows), len(tracks)]`` IoU = I / U per pair (0 where U = 0).
    """
    num_dets, num_gts = len(rows), len(tracks)
    dt_segs = [dets.segs[e] for e in rows]
    gt_segs = [t.segs for t in tracks]
    num_frames = min(max(map(len, dt_segs), default=0), max(map(len, gt_segs), default=0))
    dt_areas = _padded([dets.frame_areas[e] for e in rows], num_frames)  # [D, F]
    gt_areas = _padded([t.frame_areas for t in tracks], num_frames)  # [G, F]
    dt_odd = [dets.odd_sizes.get(e, {}) for e in rows]
    gt_odd = [t.odd_sizes for t in tracks]
    any_odd = any(dt_odd) or any(gt_odd)
    chunks: list[np.ndarray] = []  # per frame the IoUs [len(d_idx) * len(g_idx)], prediction-major
    pair_rows: list[int] = []
    pair_cols: list[int] = []
    pair_frames: list[int] = []
    mismatched = np.zeros((num_dets, num_gts), dtype=np.int64)
    # Without size mismatches, an empty mask adds exactly what an absent one adds (0 to I, its area 0 to U), so only
    # masks with pixels go to pycocotools; with mismatches, every present mask is needed to zero its pair's frame.
    dt_on, gt_on = (dt_areas > 0).T.tolist(), (gt_areas > 0).T.tolist()  # [F][D], [F][G]
    for frame in range(num_frames):
        if any_odd:
            d_idx = [i for i, segs in enumerate(dt_segs) if frame < len(segs) and segs[frame]]
            g_idx = [j for j, segs in enumerate(gt_segs) if frame < len(segs) and segs[frame] is not None]
        else:
            d_idx = list(compress(range(num_dets), dt_on[frame]))
            g_idx = list(compress(range(num_gts), gt_on[frame]))
        if not d_idx or not g_idx:
            continue
        iou = coco_mask.iou(
            [dt_segs[i][frame] for i in d_idx], [gt_segs[j][frame] for j in g_idx], np.zeros(len(g_idx), dtype=np.uint8)
        )  # [len(d_idx), len(g_idx)]
        if any_odd:
            iou = _zero_mismatched(iou, frame, d_idx, g_idx, dt_odd, gt_odd, mismatched, dt_areas, gt_areas)
        chunks.append(iou.ravel())
        pair_rows.extend(d_idx if len(g_idx) == 1 else [i for i in d_idx for _ in g_idx])
        pair_cols.extend(g_idx * len(d_idx))
        pair_frames.extend([frame] * (len(d_idx) * len(g_idx)))
    inter = _intersections(chunks, pair_rows, pair_cols, pair_frames, dt_areas, gt_areas)
    lengths_d = np.array([min(len(s), num_frames) for s in dt_segs], dtype=np.int64)
    lengths_g = np.array([min(len(s), num_frames) for s in gt_segs], dtype=np.int64)
    shorter = np.minimum(lengths_d[:, None], lengths_g[None, :])  # [D, G] frames paired by zip
    cum_d = np.concatenate([np.zeros((num_dets, 1), np.int64), np.cumsum(dt_areas, axis=1)], axis=1)
    cum_g = np.concatenate([np.zeros((num_gts, 1), np.int64), np.cumsum(gt_areas, axis=1)], axis=1)
    union = (
        cum_d[np.arange(num_dets)[:, None], shorter] + cum_g[np.arange(num_gts)[None, :], shorter] - inter - mismatched
    )
    return np.divide(
        inter.astype(np.float64), union.astype(np.float64), out=np.zeros((num_dets, num_gts)), where=union > 0
    )


def _padded(rows: list[np.ndarray], num_frames: int) -> np.ndarray:
    out = np.zeros((len(rows), num_frames), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : min(len(row), num_frames)] = row[:num_frames]
    return out


def _intersections(
    chunks: list[np.ndarray],
    rows: list[int],
    cols: list[int],
    frames: list[int],
    dt_areas: np.ndarray,
    gt_areas: np.ndarray,
) -> np.ndarray:
    """Sum over frames of the exact intersections, recovered from per-frame IoUs and areas. int64 ``[D, G]``.

    Args:
        chunks: per-frame IoUs, concatenated they align with ``rows`` / ``cols`` / ``frames`` (one entry per pair).
        dt_areas: int64 ``[D, F]`` prediction areas; gt_areas: int64 ``[G, F]`` track areas.
    """
    num_dets, num_gts = dt_areas.shape[0], gt_areas.shape[0]
    if not chunks:
        return np.zeros((num_dets, num_gts), dtype=np.int64)
    iou = np.maximum(np.concatenate(chunks), 0.0)  # -1 marks a size mismatch; _zero_mismatched accounted for it
    d_idx, g_idx, frame = (np.asarray(v, dtype=np.int64) for v in (rows, cols, frames))
    total = dt_areas[d_idx, frame] + gt_areas[g_idx, frame]
    exact = iou * total / (1.0 + iou)
    inter = np.rint(exact)
    assert np.all(np.abs(exact - inter) < 1e-3), "intersection recovery lost exactness"
    sums = np.bincount(d_idx * num_gts + g_idx, weights=inter, minlength=num_dets * num_gts)
    return sums.reshape(num_dets, num_gts).astype(np.int64)


def _zero_mismatched(
    iou: np.ndarray,
    frame: int,
    d_idx: list[int],
    g_idx: list[int],
    dt_odd: list[dict[int, Any]],
    gt_odd: list[dict[int, Any]],
    mismatched: np.ndarray,
    dt_areas: np.ndarray,
    gt_areas: np.ndarray,
) -> np.ndarray:
    """Zero the IoU of pairs whose masks differ in size in this frame and note their areas to take off the union."""
    d_size = [dt_odd[i].get(frame) for i in d_idx]
    g_size = [gt_odd[j].get(frame) for j in g_idx]
    if all(s is None for s in d_size) and all(s is None for s in g_size):
        return iou
    iou = iou.copy()
    for a, (i, ds) in enumerate(zip(d_idx, d_size)):
        for b, (j, gs) in enumerate(zip(g_idx, g_size)):
            if ds != gs:  # None means "the video's size"
                iou[a, b] = 0.0
                mismatched[i, j] += dt_areas[i, frame] + gt_areas[j, frame]
    return iou
