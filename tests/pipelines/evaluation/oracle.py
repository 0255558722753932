"""Independent oracle: a plain, loop-by-loop reimplementation of the official YouTube-VIS evaluation algorithm.

Written from the semantics in ``shared/design/ytvis-eval.md`` (per-video, per-category Python loops over per-frame
pycocotools merges), with no shared code with ``seqformer.pipelines.evaluation``. Slow; only for small test cases.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
from pycocotools import mask as mask_utils

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREA_RNG = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]]
MAX_DETS = [1, 10, 100]


def _to_rle(seg, height, width):
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg["counts"], list):
        return mask_utils.frPyObjects(seg, height, width)
    return seg


def _mean_nonzero(values):
    kept = [v for v in values if v]
    return np.array(kept).mean() if kept else 0


def official_video_iou(d_seq, g_seq):
    """The official per-frame walk over two frame lists (Python ``zip``) with pycocotools merge/area calls."""
    inter = union = 0.0
    for d, g in zip(d_seq, g_seq):
        if d and g:
            inter += mask_utils.area(mask_utils.merge([d, g], True))
            union += mask_utils.area(mask_utils.merge([d, g], False))
        elif g:
            union += mask_utils.area(g)
        elif d:
            union += mask_utils.area(d)
    return inter / union if union > 0 else 0.0


def oracle_evaluate(gt_data, results):
    """The official numbers: returns (stats list of 12, precision [T,R,K,A,M], recall [T,K,A,M], cat ids)."""
    gt_data = copy.deepcopy(gt_data)
    results = copy.deepcopy(results)
    videos = {v["id"]: v for v in gt_data["videos"]}
    cat_ids = sorted({c["id"] for c in gt_data["categories"]})
    vid_ids = sorted(videos)
    anns_by_id = {}
    vid_to_anns = defaultdict(list)
    for ann in gt_data["annotations"]:
        anns_by_id[ann["id"]] = ann
        vid_to_anns[ann["video_id"]].append(ann)
    gts = [anns_by_id[a["id"]] for v in vid_ids for a in vid_to_anns[v] if a["category_id"] in cat_ids]
    assert results and all(r["video_id"] in videos for r in results)
    for i, res in enumerate(results):
        res["areas"] = [mask_utils.area(s) if s else None for s in res["segmentations"]]
        res["id"] = i + 1
        res["iscrowd"] = 0
    dts = [r for v in vid_ids for r in results if r["video_id"] == v and r["category_id"] in cat_ids]
    for ann in gts:
        video = videos[ann["video_id"]]
        if not ann.get("_converted"):
            ann["segmentations"] = [
                _to_rle(s, video["height"], video["width"]) if s else s for s in ann["segmentations"]
            ]
            ann["_converted"] = True
        ann["avg_area"] = _mean_nonzero(ann["areas"])
        ann["ignore"] = "iscrowd" in ann and ann["iscrowd"]
    for res in dts:
        res["avg_area"] = _mean_nonzero(res["areas"])
    by_pair_gt, by_pair_dt = defaultdict(list), defaultdict(list)
    for ann in gts:
        by_pair_gt[ann["video_id"], ann["category_id"]].append(ann)
    for res in dts:
        by_pair_dt[res["video_id"], res["category_id"]].append(res)

    ious = {}
    for v in vid_ids:
        for c in cat_ids:
            gt, dt = by_pair_gt[v, c], by_pair_dt[v, c]
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order][:100]
            ious[v, c] = np.array(
                [[official_video_iou(d["segmentations"], g["segmentations"]) for g in gt] for d in dt]
            )

    def evaluate_pair(v, c, rng):
        gt, dt = by_pair_gt[v, c], by_pair_dt[v, c]
        if not gt and not dt:
            return None
        g_ignore = [1 if (g["ignore"] or g["avg_area"] < rng[0] or g["avg_area"] > rng[1]) else 0 for g in gt]
        g_order = np.argsort(g_ignore, kind="mergesort")
        gt = [gt[i] for i in g_order]
        g_ignore = [g_ignore[i] for i in g_order]
        d_order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in d_order[:100]]
        crowd = [int(g["iscrowd"]) for g in gt]
        iou = ious[v, c]
        gtm = np.zeros((len(IOU_THRS), len(gt)))
        dtm = np.zeros((len(IOU_THRS), len(dt)))
        dt_ig = np.zeros((len(IOU_THRS), len(dt)))
        for ti, t in enumerate(IOU_THRS):
            for di, d in enumerate(dt):
                best, m = min(t, 1 - 1e-10), -1
                for gi in range(len(gt)):
                    if gtm[ti, gi] > 0 and not crowd[gi]:
                        continue
                    if m > -1 and g_ignore[m] == 0 and g_ignore[gi] == 1:
                        break
                    if iou[di, g_order[gi]] < best:
                        continue
                    best, m = iou[di, g_order[gi]], gi
                if m == -1:
                    continue
                dt_ig[ti, di] = g_ignore[m]
                dtm[ti, di] = gt[m]["id"]
                gtm[ti, m] = d["id"]
        outside = np.array([d["avg_area"] < rng[0] or d["avg_area"] > rng[1] for d in dt]).reshape(1, len(dt))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(outside, len(IOU_THRS), 0)))
        return {"scores": [d["score"] for d in dt], "dtm": dtm, "dt_ig": dt_ig, "g_ignore": np.array(g_ignore)}

    precision = -np.ones((len(IOU_THRS), len(REC_THRS), len(cat_ids), len(AREA_RNG), len(MAX_DETS)))
    recall = -np.ones((len(IOU_THRS), len(cat_ids), len(AREA_RNG), len(MAX_DETS)))
    for k, c in enumerate(cat_ids):
        for a, rng in enumerate(AREA_RNG):
            pairs = [evaluate_pair(v, c, rng) for v in vid_ids]
            pairs = [p for p in pairs if p is not None]
            if not pairs:
                continue
            for m, max_det in enumerate(MAX_DETS):
                scores = np.concatenate([p["scores"][:max_det] for p in pairs])
                order = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([p["dtm"][:, :max_det] for p in pairs], axis=1)[:, order]
                dt_ig = np.concatenate([p["dt_ig"][:, :max_det] for p in pairs], axis=1)[:, order]
                g_ig = np.concatenate([p["g_ignore"] for p in pairs])
                npig = np.count_nonzero(g_ig == 0)
                if npig == 0:
                    continue
                tps = np.logical_and(dtm, np.logical_not(dt_ig))
                fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
                tp_sum = np.cumsum(tps, axis=1).astype(float)
                fp_sum = np.cumsum(fps, axis=1).astype(float)
                for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                    nd = len(tp)
                    rc = tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]
                    q = [0.0] * len(REC_THRS)
                    for ri, pi in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m] = q
    return _stats(precision, recall), precision, recall, cat_ids


def _stats(precision, recall):
    def mean(s):
        return -1 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    def ap(iou=None, a=0):
        s = precision if iou is None else precision[np.where(iou == IOU_THRS)[0]]
        return mean(s[:, :, :, a, 2])

    def ar(m, a=0):
        return mean(recall[:, :, a, m])

    return [ap(), ap(0.5), ap(0.75), ap(a=1), ap(a=2), ap(a=3), ar(0), ar(1), ar(2), ar(2, 1), ar(2, 2), ar(2, 3)]
