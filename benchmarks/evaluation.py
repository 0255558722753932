"""YouTube-VIS evaluation benchmark: seqformer's evaluator against a plain loop implementation of the official
algorithm, on a synthetic set the size of YouTube-VIS 2019 val.

Data: 302 videos of 20-34 frames (27 on average) at 360x640, 40 categories, 1-4 GT tracks per video (moving
rectangles, uncompressed RLE like the real GT, absent at the start or end of some videos) and 100 predictions per video
(compressed RLE): 80% are jittered copies of one of the video's tracks, labelled with that track's category 30% of the
time and a random one otherwise, 20% are random tracks; 5% of predicted frames are empty masks.

Baseline: the official algorithm written plainly — per-frame ``area`` when loading results, per (video, category)
video IoU by Python loops over frames with two pycocotools ``merge`` + ``area`` calls per frame, the per-threshold
matching loops and the per-category accumulation loops.

Each case runs in a fresh child process (fork); time is wall-clock, memory is the child's peak resident set size
(``ru_maxrss``) and its increase over the RSS at start (the shared synthetic data). Both must give the same 12 numbers.

Usage::

    python benchmarks/evaluation.py [--videos 302] [--preds 100] [--seed 0] [--out benchmarks/results/evaluation.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

RESULTS = Path(__file__).parent / "results" / "evaluation.json"
H, W = 360, 640
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ----------------------------------------------------------------------------------------------------------- data
@functools.cache
def _encode_number(value: int) -> str:
    """One run in pycocotools' compressed-string alphabet (5-bit groups, sign-extended)."""
    out, more = [], True
    while more:
        group = value & 0x1F
        value >>= 5
        more = value != -1 if group & 0x10 else value != 0
        out.append(chr(48 + (group | 0x20 if more else group)))
    return "".join(out)


def _box_runs(y0: int, x0: int, y1: int, x1: int) -> list[int]:
    """Column-major run lengths of a rectangle with 0 <= y0 < y1 < H and 0 <= x0 < x1 < W."""
    height, gap = y1 - y0, H - (y1 - y0)
    return [x0 * H + y0] + [height, gap] * (x1 - x0 - 1) + [height, (H - y1) + (W - x1) * H]


def _box_string(y0: int, x0: int, y1: int, x1: int) -> str:
    """Compressed RLE string of a rectangle, written directly: after the first three runs every delta is 0."""
    height, gap, first, last = y1 - y0, H - (y1 - y0), x0 * H + y0, (H - y1) + (W - x1) * H
    if x1 - x0 == 1:
        return _encode_number(first) + _encode_number(height) + _encode_number(last)
    # runs: first, (height, gap) * (columns - 1), height, last; the final delta is last - gap
    return (
        _encode_number(first)
        + _encode_number(height)
        + _encode_number(gap)
        + "0" * (2 * (x1 - x0) - 3)
        + _encode_number(last - gap)
    )


EMPTY = {"size": [H, W], "counts": _encode_number(H * W)}


def _clip_boxes(boxes: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Round and clip float boxes ``[F, 4]`` (y0, x0, y1, x1) to valid rectangles of at least one pixel."""
    y0 = np.clip(boxes[:, 0], 0, H - 2).astype(np.int64)
    x0 = np.clip(boxes[:, 1], 0, W - 2).astype(np.int64)
    y1 = np.clip(boxes[:, 2].astype(np.int64), y0 + 1, H - 1)
    x1 = np.clip(boxes[:, 3].astype(np.int64), x0 + 1, W - 1)
    return list(zip(y0.tolist(), x0.tolist(), y1.tolist(), x1.tolist()))


def _track_boxes(rng: np.random.Generator, length: int) -> np.ndarray:
    """float ``[length, 4]`` boxes of a rectangle drifting at constant speed."""
    bh, bw = rng.uniform(20, 250), rng.uniform(20, 320)
    cy, cx = rng.uniform(bh / 2, H - bh / 2), rng.uniform(bw / 2, W - bw / 2)
    frames = np.arange(length)
    ys, xs = cy + rng.normal(0, 2) * frames, cx + rng.normal(0, 3) * frames
    return np.stack([ys - bh / 2, xs - bw / 2, ys + bh / 2, xs + bw / 2], axis=1)


def make_dataset(num_videos: int = 302, preds_per_video: int = 100, seed: int = 0) -> tuple[dict, list[dict]]:
    """The synthetic GT dict and results list described in the module docstring."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, 41)]
    videos, annotations, results = [], [], []
    video_ids = rng.permutation(np.arange(1, num_videos + 1)).tolist()  # ids not in file order, as in the real files
    for video_id in video_ids:
        length = int(rng.integers(20, 35))
        videos.append(
            {
                "id": video_id,
                "width": W,
                "height": H,
                "length": length,
                "file_names": [f"{video_id}/{f:05d}.jpg" for f in range(length)],
            }
        )
        tracks = []
        for _ in range(int(rng.integers(1, 5))):
            boxes = _clip_boxes(_track_boxes(rng, length))
            start = int(rng.integers(0, 4)) if rng.random() < 0.3 else 0
            end = length - (int(rng.integers(0, 4)) if rng.random() < 0.3 else 0)
            segs = [
                {"size": [H, W], "counts": _box_runs(*b)} if start <= f < end else None for f, b in enumerate(boxes)
            ]
            areas = [(b[2] - b[0]) * (b[3] - b[1]) if s else None for b, s in zip(boxes, segs)]
            category = int(rng.integers(1, 41))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": category,
                    "iscrowd": 0,
                    "segmentations": segs,
                    "areas": areas,
                    "bboxes": [None] * length,
                    "height": H,
                    "width": W,
                    "length": 1,
                }
            )
            tracks.append((np.array(boxes, dtype=np.float64), category))
        for _ in range(preds_per_video):
            if rng.random() < 0.8:
                boxes, category = tracks[int(rng.integers(len(tracks)))]
                boxes = _clip_boxes(boxes + rng.normal(0, 6, boxes.shape))
                category = category if rng.random() < 0.3 else int(rng.integers(1, 41))
            else:
                boxes, category = _clip_boxes(_track_boxes(rng, length)), int(rng.integers(1, 41))
            empty = (rng.random(length) < 0.05).tolist()
            segs = [EMPTY if e else {"size": [H, W], "counts": _box_string(*b)} for b, e in zip(boxes, empty)]
            results.append(
                {"video_id": video_id, "category_id": category, "score": float(rng.random()), "segmentations": segs}
            )
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


# ------------------------------------------------------------------------------------------------------- baseline
def baseline_evaluate(gt: dict, results: list[dict]) -> dict[str, float]:
    """The official algorithm, plainly: per-video, per-category Python loops over per-frame RLE merges."""
    iou_thrs, rec_thrs = np.linspace(0.5, 0.95, 10), np.linspace(0.0, 1.0, 101)
    area_rngs, max_dets = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]], [1, 10, 100]
    videos = {v["id"]: v for v in gt["videos"]}
    vid_ids, cat_ids = sorted(videos), sorted(c["id"] for c in gt["categories"])
    gts, dts = defaultdict(list), defaultdict(list)
    for ann in gt["annotations"]:
        video = videos[ann["video_id"]]
        segs = [mask_utils.frPyObjects(s, video["height"], video["width"]) if s else None for s in ann["segmentations"]]
        kept = [a for a in ann["areas"] if a]
        gts[ann["video_id"], ann["category_id"]].append(
            {
                "id": ann["id"],
                "segs": segs,
                "crowd": int(ann["iscrowd"]),
                "ignore": bool(ann["iscrowd"]),
                "avg": np.array(kept).mean() if kept else 0,
            }
        )
    for index, res in enumerate(results):
        areas = [mask_utils.area(s) if s else None for s in res["segmentations"]]
        kept = [a for a in areas if a]
        if res["category_id"] in cat_ids:
            dts[res["video_id"], res["category_id"]].append(
                {
                    "id": index + 1,
                    "segs": res["segmentations"],
                    "score": res["score"],
                    "avg": np.array(kept).mean() if kept else 0,
                }
            )

    def video_iou(d_seq, g_seq):
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

    ious = {}
    for v in vid_ids:
        for c in cat_ids:
            dt = sorted(dts[v, c], key=lambda d: -d["score"])[:100]  # Python's sort is stable, like mergesort
            ious[v, c] = [[video_iou(d["segs"], g["segs"]) for g in gts[v, c]] for d in dt]

    def evaluate_pair(v, c, rng):
        gt_list, dt = gts[v, c], dts[v, c]
        if not gt_list and not dt:
            return None
        ig = [int(g["ignore"] or g["avg"] < rng[0] or g["avg"] > rng[1]) for g in gt_list]
        order = sorted(range(len(gt_list)), key=lambda i: ig[i])
        dt = sorted(dt, key=lambda d: -d["score"])[:100]
        gtm = np.zeros((10, len(gt_list)))
        dtm, dt_ig = np.zeros((10, len(dt))), np.zeros((10, len(dt)))
        for ti, t in enumerate(iou_thrs):
            for di, d in enumerate(dt):
                best, m = min(t, 1 - 1e-10), -1
                for gi in order:
                    if gtm[ti, gi] > 0 and not gt_list[gi]["crowd"]:
                        continue
                    if m > -1 and ig[m] == 0 and ig[gi] == 1:
                        break
                    if ious[v, c][di][gi] < best:
                        continue
                    best, m = ious[v, c][di][gi], gi
                if m > -1:
                    dt_ig[ti, di], dtm[ti, di], gtm[ti, m] = ig[m], gt_list[m]["id"], d["id"]
        outside = np.array([[d["avg"] < rng[0] or d["avg"] > rng[1] for d in dt]], dtype=bool)
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, outside))
        return [d["score"] for d in dt], dtm, dt_ig, [i for i in ig]

    precision = -np.ones((10, 101, len(cat_ids), 4, 3))
    recall = -np.ones((10, len(cat_ids), 4, 3))
    for k, c in enumerate(cat_ids):
        for a, rng in enumerate(area_rngs):
            pairs = [p for p in (evaluate_pair(v, c, rng) for v in vid_ids) if p is not None]
            npig = sum(p[3].count(0) for p in pairs)
            if not pairs or npig == 0:
                continue
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([p[0][:max_det] for p in pairs])
                order = np.argsort(-scores, kind="mergesort")
                dtm = np.concatenate([p[1][:, :max_det] for p in pairs], axis=1)[:, order]
                dt_ig = np.concatenate([p[2][:, :max_det] for p in pairs], axis=1)[:, order]
                tp_sum = np.cumsum(np.logical_and(dtm, ~dt_ig), axis=1).astype(float)
                fp_sum = np.cumsum(np.logical_and(dtm == 0, ~dt_ig), axis=1).astype(float)
                for t in range(10):
                    tp, fp = tp_sum[t], fp_sum[t]
                    nd, rc = len(tp), tp / npig
                    pr = (tp / (fp + tp + np.spacing(1))).tolist()
                    recall[t, k, a, m] = rc[-1] if nd else 0
                    for i in range(nd - 1, 0, -1):
                        pr[i - 1] = max(pr[i - 1], pr[i])
                    q = [0.0] * 101
                    for ri, pi in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
                        if pi >= nd:
                            break
                        q[ri] = pr[pi]
                    precision[t, :, k, a, m] = q

    def mean(s):
        return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0

    ap = [mean(precision[:, :, :, 0, 2]), mean(precision[:1, :, :, 0, 2]), mean(precision[5:6, :, :, 0, 2])]
    ap += [mean(precision[:, :, :, a, 2]) for a in (1, 2, 3)]
    ar = [mean(recall[:, :, 0, m]) for m in (0, 1, 2)] + [mean(recall[:, :, a, 2]) for a in (1, 2, 3)]
    return dict(zip(METRIC_KEYS, ap + ar))


# -------------------------------------------------------------------------------------------------------- harness
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(name: str, data: tuple[dict, list[dict]], queue) -> None:
    from seqformer.pipelines.evaluation import evaluate

    gt, results = data
    start_rss = _rss_bytes()
    start, start_cpu = time.perf_counter(), time.process_time()
    if name == "seqformer":
        metrics = evaluate(gt, results)
        metrics = {k: metrics[k] for k in METRIC_KEYS}
    else:
        metrics = baseline_evaluate(gt, results)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put(
        {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "peak_rss_mib": peak / 2**20,
            "peak_rss_increase_mib": (peak - start_rss) / 2**20,
            "metrics": metrics,
        }
    )


def _run(name: str, data: tuple[dict, list[dict]]) -> dict:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(name, data, queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=302)
    parser.add_argument("--preds", type=int, default=100, help="predictions per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    start = time.perf_counter()
    data = make_dataset(args.videos, args.preds, args.seed)
    frames = sum(len(r["segmentations"]) for r in data[1])
    print(
        f"synthetic set: {args.videos} videos, {len(data[0]['annotations'])} GT tracks, {len(data[1])} predictions, "
        f"{frames} predicted frames at {H}x{W} (built in {time.perf_counter() - start:.1f} s)"
    )
    cases = {name: _run(name, data) for name in ("seqformer", "baseline")}
    mine, base = cases["seqformer"], cases["baseline"]
    diff = max(abs(mine["metrics"][k] - base["metrics"][k]) for k in METRIC_KEYS)
    assert diff <= 1e-12, f"seqformer and the baseline disagree by {diff}"
    print(f"\n{'case':<12}{'wall s':>10}{'CPU s':>10}{'peak RSS MiB':>15}{'+ over data':>13}")
    for name, case in cases.items():
        print(
            f"{name:<12}{case['seconds']:>10.2f}{case['cpu_seconds']:>10.2f}{case['peak_rss_mib']:>15.0f}"
            f"{case['peak_rss_increase_mib']:>13.0f}"
        )
    speedup = base["seconds"] / mine["seconds"]
    cpu_speedup = base["cpu_seconds"] / mine["cpu_seconds"]
    print(
        f"\nspeed-up {speedup:.1f}x wall, {cpu_speedup:.1f}x CPU; the 12 numbers agree "
        f"(max |diff| = {diff:.1e}); AP = {mine['metrics']['AP']:.4f}"
    )
    report = {
        "config": {
            "videos": args.videos,
            "preds_per_video": args.preds,
            "seed": args.seed,
            "height": H,
            "width": W,
            "gt_tracks": len(data[0]["annotations"]),
            "predicted_frames": frames,
        },
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "cases": cases,
        "speedup": speedup,
        "cpu_speedup": cpu_speedup,
        "max_abs_metric_diff": diff,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
