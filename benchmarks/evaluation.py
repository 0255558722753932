"""YouTube-VIS evaluation benchmark: seqformer's evaluator against a plain loop implementation of the official
algorithm, on a synthetic set the size of YouTube-VIS 2019 val.

Data: 302 videos of 20-34 frames (27 on average) at 360x640, 40 categories, 1-4 GT tracks per video (moving
rectangles, uncompressed RLE like the real GT, absent at the start or end of some videos) and 100 predictions per video
(compressed RLE) shaped like a model's top-k (query, class) pairs: each takes the category of one of the video's tracks
(8% a random category instead, so about 93% fall in a GT category of their video); 60% follow that track with a
per-prediction jitter of 2-20 px, the rest follow another track of the video or a random path; 5% of predicted frames
are empty masks. So the official per-pair, per-frame IoU loop runs on about 2,500 pair-frames per video.

Baseline: the official youtubevos/cocoapi algorithm (``ytvos.py`` + ``ytvoseval.py``) written plainly, with its data
flow and per-frame calls: ``json.load`` of both files and index building; ``loadRes`` with per-frame ``area`` and
``toBbox`` for every result mask; ``_prepare`` (per-frame ``annToRLE``, which turns uncompressed GT frames into RLE
with ``frPyObjects``); ``computeIoU`` per (video, category), walking frames in Python with per-frame
``area(merge([d, g], True))`` and ``area(merge([d, g], False))`` (``area`` alone where only one is present);
``evaluateVid`` per (category, area range, video) with the greedy matching loops; ``accumulate``; ``summarize``.

Cases: ``json.load only`` (parsing the two files with the standard library, as the official code does),
``seqformer`` (``evaluate_files``) and ``baseline``. Both evaluators start from the same two files on disk (written
just before, so read from the page cache), each run in a fresh spawned interpreter (none imports torch; numpy and
pycocotools are imported before timing, seqformer's own modules inside it). Repetitions are interleaved (seqformer,
baseline, then baseline, seqformer, ...) so that a change in machine load hits both sides alike; the ratio is taken
from the medians and, as a check, per repetition from the side-by-side pair. Time is wall-clock and process CPU time
(CPU is the steadier figure on a shared machine; the load average before each run and at the start and end is
recorded); memory is the child's peak resident set size. seqformer's compiled helpers are built (or found in the
build cache) in a separate child before timing, as ``evaluate`` builds them once per machine; the timed child only
imports them. seqformer and the baseline must agree on all 12 numbers to 1e-6 in every repetition.

Usage::

    python benchmarks/evaluation.py [--videos 302] [--preds 100] [--seed 0] [--repeats 3] [--skip-baseline]
        [--out benchmarks/results/evaluation.json]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

RESULTS = Path(__file__).parent / "results" / "evaluation.json"
H, W = 360, 640
NUM_CATEGORIES = 40
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


def _video_tracks(rng: np.random.Generator, video_id: int, length: int, annotations: list[dict]) -> list[tuple]:
    """Append 1-4 GT tracks of one video to ``annotations``; returns their (float boxes ``[F, 4]``, category)."""
    tracks = []
    for _ in range(int(rng.integers(1, 5))):
        boxes = _clip_boxes(_track_boxes(rng, length))
        start = int(rng.integers(0, 4)) if rng.random() < 0.3 else 0
        end = length - (int(rng.integers(0, 4)) if rng.random() < 0.3 else 0)
        segs = [{"size": [H, W], "counts": _box_runs(*b)} if start <= f < end else None for f, b in enumerate(boxes)]
        category = int(rng.integers(1, NUM_CATEGORIES + 1))
        annotations.append(
            {
                "id": len(annotations) + 1,
                "video_id": video_id,
                "category_id": category,
                "iscrowd": 0,
                "segmentations": segs,
                "areas": [(b[2] - b[0]) * (b[3] - b[1]) if s else None for b, s in zip(boxes, segs)],
                "bboxes": [None] * length,
                "height": H,
                "width": W,
                "length": 1,
            }
        )
        tracks.append((np.array(boxes, dtype=np.float64), category))
    return tracks


def _video_predictions(rng: np.random.Generator, video_id: int, length: int, tracks: list[tuple], count: int) -> list:
    """``count`` results for one video, shaped like a model's top-k (query, class) pairs (see the module docstring)."""
    results = []
    for _ in range(count):
        boxes, category = tracks[int(rng.integers(len(tracks)))]
        if rng.random() < 0.6:  # a query on this object, jittered by a per-query amount
            boxes = boxes + rng.normal(0, rng.uniform(2, 20), boxes.shape)
        else:  # a query on another object, or on background
            boxes = tracks[int(rng.integers(len(tracks)))][0] if rng.random() < 0.5 else _track_boxes(rng, length)
            boxes = boxes + rng.normal(0, 8, boxes.shape)
        if rng.random() < 0.08:  # a class absent from the video
            category = int(rng.integers(1, NUM_CATEGORIES + 1))
        empty = (rng.random(length) < 0.05).tolist()
        segs = [EMPTY if e else {"size": [H, W], "counts": _box_string(*b)} for b, e in zip(_clip_boxes(boxes), empty)]
        results.append(
            {"video_id": video_id, "category_id": category, "score": float(rng.random()), "segmentations": segs}
        )
    return results


def make_dataset(num_videos: int = 302, preds_per_video: int = 100, seed: int = 0) -> tuple[dict, list[dict]]:
    """The synthetic GT dict and results list described in the module docstring."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    videos, annotations, results = [], [], []
    video_ids = rng.permutation(np.arange(1, num_videos + 1)).tolist()  # ids not in file order, as in the real files
    for video_id in video_ids:
        length = int(rng.integers(20, 35))
        names = [f"{video_id}/{f:05d}.jpg" for f in range(length)]
        videos.append({"id": video_id, "width": W, "height": H, "length": length, "file_names": names})
        tracks = _video_tracks(rng, video_id, length, annotations)
        results.extend(_video_predictions(rng, video_id, length, tracks, preds_per_video))
    return {"videos": videos, "categories": categories, "annotations": annotations}, results


# ------------------------------------------------------------------------------------------------------- baseline
class PlainVideoSet:
    """The official ``YTVOS`` data flow, plainly: load a JSON file and index videos, categories and annotations."""

    def __init__(self, path: str | None = None) -> None:
        self.dataset: dict = {}
        self.anns: dict = {}
        self.vids: dict = {}
        self.cats: dict = {}
        self.vid_to_anns: dict = defaultdict(list)
        if path is not None:
            with open(path) as handle:
                self.dataset = json.load(handle)
            self.create_index()

    def create_index(self) -> None:
        self.anns, self.vids, self.cats = {}, {}, {}
        self.vid_to_anns = defaultdict(list)
        for ann in self.dataset.get("annotations", []):
            self.vid_to_anns[ann["video_id"]].append(ann)
            self.anns[ann["id"]] = ann
        for video in self.dataset.get("videos", []):
            self.vids[video["id"]] = video
        for category in self.dataset.get("categories", []):
            self.cats[category["id"]] = category

    def ann_ids(self, vid_ids: list, cat_ids: list) -> list:
        """Ids of the annotations of the given videos (in video order) whose category is one of ``cat_ids``."""
        anns = [ann for vid in vid_ids if vid in self.vid_to_anns for ann in self.vid_to_anns[vid]]
        return [ann["id"] for ann in anns if ann["category_id"] in cat_ids]

    def load_results(self, path: str) -> PlainVideoSet:
        """Results as a second set: per frame ``area`` and ``toBbox`` of every mask, then the mean non-zero area."""
        res = PlainVideoSet()
        res.dataset["videos"] = list(self.dataset["videos"])
        with open(path) as handle:
            anns = json.load(handle)
        assert isinstance(anns, list) and {a["video_id"] for a in anns} <= set(self.vids)
        res.dataset["categories"] = copy.deepcopy(self.dataset["categories"])
        for index, ann in enumerate(anns):
            ann["areas"], ann["bboxes"] = [], []
            for seg in ann["segmentations"]:
                ann["areas"].append(mask_utils.area(seg) if seg else None)
                ann["bboxes"].append(mask_utils.toBbox(seg) if seg else None)
            ann["id"] = index + 1
            nonzero = [a for a in ann["areas"] if a]
            ann["avg_area"] = np.array(nonzero).mean() if nonzero else 0
            ann["iscrowd"] = 0
        res.dataset["annotations"] = anns
        res.create_index()
        return res

    def ann_to_rle(self, ann: dict, frame: int) -> dict:
        video = self.vids[ann["video_id"]]
        seg = ann["segmentations"][frame]
        if isinstance(seg, list):
            return mask_utils.merge(mask_utils.frPyObjects(seg, video["height"], video["width"]))
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, video["height"], video["width"])
        return seg


class PlainVideoEval:
    """The official ``YTVOSeval`` algorithm, plainly: IoU per (video, category) by a Python walk over frames with
    per-frame pycocotools ``merge``/``area`` calls, matching per (category, area range, video), then accumulation."""

    iou_thrs = np.linspace(0.5, 0.95, 10)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    area_rngs = [[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]]
    max_dets = [1, 10, 100]

    def __init__(self, gt: PlainVideoSet, dt: PlainVideoSet) -> None:
        self.gt, self.dt = gt, dt
        self.vid_ids, self.cat_ids = sorted(gt.vids), sorted(gt.cats)

    def prepare(self) -> None:
        gts = [self.gt.anns[i] for i in self.gt.ann_ids(self.vid_ids, self.cat_ids)]
        dts = [self.dt.anns[i] for i in self.dt.ann_ids(self.vid_ids, self.cat_ids)]
        for anns, source in ((gts, self.gt), (dts, self.dt)):
            for ann in anns:
                for frame, seg in enumerate(ann["segmentations"]):
                    if seg:
                        ann["segmentations"][frame] = source.ann_to_rle(ann, frame)
                nonzero = [a for a in ann["areas"] if a]
                ann["avg_area"] = np.array(nonzero).mean() if nonzero else 0
        for ann in gts:
            ann["ignore"] = "iscrowd" in ann and ann["iscrowd"]
        self.gts, self.dts = defaultdict(list), defaultdict(list)
        for ann in gts:
            self.gts[ann["video_id"], ann["category_id"]].append(ann)
        for ann in dts:
            self.dts[ann["video_id"], ann["category_id"]].append(ann)

    def evaluate(self) -> None:
        self.prepare()
        self.ious = {(v, c): self.compute_iou(v, c) for v in self.vid_ids for c in self.cat_ids}
        self.eval_vids = [
            self.evaluate_vid(v, c, rng, self.max_dets[-1])
            for c in self.cat_ids
            for rng in self.area_rngs
            for v in self.vid_ids
        ]

    def compute_iou(self, vid: int, cat: int) -> np.ndarray | list:
        gt, dt = self.gts[vid, cat], self.dts[vid, cat]
        if not gt and not dt:
            return []
        dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")][: self.max_dets[-1]]

        def iou_seq(d_seq: list, g_seq: list) -> float:
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

        ious = np.zeros((len(dt), len(gt)))
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = iou_seq(dt[i]["segmentations"], gt[j]["segmentations"])
        return ious

    def evaluate_vid(self, vid: int, cat: int, rng: list, max_det: int) -> dict | None:
        gt, dt = self.gts[vid, cat], self.dts[vid, cat]
        if not gt and not dt:
            return None
        for g in gt:
            g["_ignore"] = int(bool(g["ignore"]) or g["avg_area"] < rng[0] or g["avg_area"] > rng[1])
        gt_order = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gt_order]
        dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")[:max_det]]
        crowd = [int(g["iscrowd"]) for g in gt]
        ious = self.ious[vid, cat][:, gt_order] if len(self.ious[vid, cat]) > 0 else self.ious[vid, cat]
        num_t = len(self.iou_thrs)
        gtm, dtm, dt_ig = np.zeros((num_t, len(gt))), np.zeros((num_t, len(dt))), np.zeros((num_t, len(dt)))
        gt_ig = np.array([g["_ignore"] for g in gt])
        if len(ious):
            for t_index, t in enumerate(self.iou_thrs):
                for d_index, d in enumerate(dt):
                    best, m = min(t, 1 - 1e-10), -1
                    for g_index in range(len(gt)):
                        if gtm[t_index, g_index] > 0 and not crowd[g_index]:
                            continue
                        if m > -1 and gt_ig[m] == 0 and gt_ig[g_index] == 1:
                            break
                        if ious[d_index, g_index] < best:
                            continue
                        best, m = ious[d_index, g_index], g_index
                    if m == -1:
                        continue
                    dt_ig[t_index, d_index] = gt_ig[m]
                    dtm[t_index, d_index] = gt[m]["id"]
                    gtm[t_index, m] = d["id"]
        outside = np.array([d["avg_area"] < rng[0] or d["avg_area"] > rng[1] for d in dt]).reshape((1, len(dt)))
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(outside, num_t, 0)))
        return {"dtMatches": dtm, "dtScores": [d["score"] for d in dt], "gtIgnore": gt_ig, "dtIgnore": dt_ig}

    def accumulate(self) -> None:
        num_t, num_r, num_k, num_a = len(self.iou_thrs), len(self.rec_thrs), len(self.cat_ids), len(self.area_rngs)
        self.precision = -np.ones((num_t, num_r, num_k, num_a, len(self.max_dets)))
        self.recall = -np.ones((num_t, num_k, num_a, len(self.max_dets)))
        num_v = len(self.vid_ids)
        for k in range(num_k):
            for a in range(num_a):
                for m, max_det in enumerate(self.max_dets):
                    entries = [self.eval_vids[k * num_a * num_v + a * num_v + i] for i in range(num_v)]
                    entries = [e for e in entries if e is not None]
                    if not entries:
                        continue
                    scores = np.concatenate([e["dtScores"][:max_det] for e in entries])
                    order = np.argsort(-scores, kind="mergesort")
                    dtm = np.concatenate([e["dtMatches"][:, :max_det] for e in entries], axis=1)[:, order]
                    dt_ig = np.concatenate([e["dtIgnore"][:, :max_det] for e in entries], axis=1)[:, order]
                    npig = np.count_nonzero(np.concatenate([e["gtIgnore"] for e in entries]) == 0)
                    if npig == 0:
                        continue
                    tp_sum = np.cumsum(np.logical_and(dtm, np.logical_not(dt_ig)), axis=1).astype(np.float64)
                    fp_sum = np.cumsum(np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig)), axis=1).astype(
                        np.float64
                    )
                    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
                        nd, rc = len(tp), tp / npig
                        pr = (tp / (fp + tp + np.spacing(1))).tolist()
                        self.recall[t, k, a, m] = rc[-1] if nd else 0
                        for i in range(nd - 1, 0, -1):
                            pr[i - 1] = max(pr[i - 1], pr[i])
                        q = [0.0] * num_r
                        for ri, pi in enumerate(np.searchsorted(rc, self.rec_thrs, side="left")):
                            if pi >= nd:
                                break
                            q[ri] = pr[pi]
                        self.precision[t, :, k, a, m] = q

    def summarize(self) -> dict[str, float]:
        def mean(s: np.ndarray) -> float:
            return float(np.mean(s[s > -1])) if (s > -1).any() else -1.0

        p, r = self.precision, self.recall
        ap = [mean(p[:, :, :, 0, 2]), mean(p[np.where(self.iou_thrs == 0.5)[0]][:, :, :, 0, 2])]
        ap += [mean(p[np.where(self.iou_thrs == 0.75)[0]][:, :, :, 0, 2])]
        ap += [mean(p[:, :, :, a, 2]) for a in (1, 2, 3)]
        ar = [mean(r[:, :, 0, m]) for m in (0, 1, 2)] + [mean(r[:, :, a, 2]) for a in (1, 2, 3)]
        return dict(zip(METRIC_KEYS, ap + ar))


def baseline_evaluate(gt_path: str, results_path: str) -> dict[str, float]:
    """The official algorithm end to end, as the official scripts run it: load, loadRes, evaluate, accumulate."""
    gt = PlainVideoSet(gt_path)
    evaluator = PlainVideoEval(gt, gt.load_results(results_path))
    evaluator.evaluate()
    evaluator.accumulate()
    return evaluator.summarize()


# -------------------------------------------------------------------------------------------------------- harness
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _json_load(gt_path: str, results_path: str) -> dict[str, float]:
    """Only parse the two files (the floor that every file-based evaluator pays)."""
    for path in (gt_path, results_path):
        with open(path) as handle:
            json.load(handle)
    return {}


def _seqformer(gt_path: str, results_path: str) -> dict[str, float]:
    from seqformer.pipelines.evaluation import evaluate_files

    metrics = evaluate_files(gt_path, results_path)
    return {k: metrics[k] for k in METRIC_KEYS}


def _build(gt_path: str, results_path: str) -> dict[str, float]:
    from seqformer.pipelines.evaluation._extension import load

    load()
    return {}


CASES = {"seqformer": _seqformer, "baseline": baseline_evaluate, "json.load only": _json_load, "build": _build}


def _child(name: str, paths: tuple[str, str], queue: Any) -> None:
    start_rss = _rss_bytes()
    start, start_cpu = time.perf_counter(), time.process_time()
    metrics = CASES[name](*paths)
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


def _run(name: str, paths: tuple[str, str]) -> dict:
    # A fresh interpreter per case: a fork of this parent, whose heap held the whole synthetic set, would charge
    # every case for copy-on-write page faults in the memory it inherits.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(name, paths, queue))
    process.start()
    out = queue.get()
    process.join()
    return out


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=302)
    parser.add_argument("--preds", type=int, default=100, help="predictions per video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of each case")
    parser.add_argument("--skip-baseline", action="store_true", help="time only seqformer and json.load")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    load_at_start = _load_average()
    start = time.perf_counter()
    gt, results = make_dataset(args.videos, args.preds, args.seed)
    gt_pairs = {(a["video_id"], a["category_id"]) for a in gt["annotations"]}
    config = {
        "videos": args.videos,
        "preds_per_video": args.preds,
        "seed": args.seed,
        "repeats": args.repeats,
        "height": H,
        "width": W,
        "gt_tracks": len(gt["annotations"]),
        "predicted_frames": sum(len(r["segmentations"]) for r in results),
        "predictions_in_a_gt_category_of_their_video": sum(
            (r["video_id"], r["category_id"]) in gt_pairs for r in results
        )
        / len(results),
        "input": "both evaluators read the same gt.json and results.json files (page-cached), fresh interpreter each",
    }
    with tempfile.TemporaryDirectory(prefix="ytvis_bench_") as folder:
        paths = (os.path.join(folder, "gt.json"), os.path.join(folder, "results.json"))
        for path, data in zip(paths, (gt, results)):
            with open(path, "w") as handle:
                json.dump(data, handle)
        del gt, results
        config["gt_file_mib"] = os.path.getsize(paths[0]) / 2**20
        config["results_file_mib"] = os.path.getsize(paths[1]) / 2**20
        print(
            f"synthetic set: {config['videos']} videos, {config['gt_tracks']} GT tracks, "
            f"{config['videos'] * config['preds_per_video']} predictions "
            f"({config['predictions_in_a_gt_category_of_their_video']:.0%} in a GT category of their video), "
            f"{config['predicted_frames']} predicted frames at {H}x{W}, results file "
            f"{config['results_file_mib']:.0f} MiB (built in {time.perf_counter() - start:.1f} s)"
        )
        _run("build", paths)  # the one-off compile, outside the timed cases
        pair = ["seqformer"] + ([] if args.skip_baseline else ["baseline"])
        runs: dict[str, list[dict]] = {name: [] for name in ["json.load only", *pair]}
        for rep in range(args.repeats):
            order = ["json.load only"] + (pair if rep % 2 == 0 else pair[::-1])
            for name in order:
                load_before = _load_average()
                run = _run(name, paths)
                run["load_average_before"] = load_before
                run["repetition"] = rep
                runs[name].append(run)
                print(
                    f"  rep {rep} {name:<15} wall {run['seconds']:7.2f} s  CPU {run['cpu_seconds']:7.2f} s  "
                    f"load {load_before}"
                )
    _report(config, runs, load_at_start, args.out)


def _summary(runs: list[dict]) -> dict[str, Any]:
    wall, cpu = [r["seconds"] for r in runs], [r["cpu_seconds"] for r in runs]
    return {
        "median_seconds": float(np.median(wall)),
        "best_seconds": min(wall),
        "median_cpu_seconds": float(np.median(cpu)),
        "best_cpu_seconds": min(cpu),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "peak_rss_increase_mib": max(r["peak_rss_increase_mib"] for r in runs),
        "metrics": runs[0]["metrics"],
        "runs": runs,
    }


def _report(config: dict, runs: dict[str, list[dict]], load_at_start: list[float], out: str) -> None:
    cases = {name: _summary(case_runs) for name, case_runs in runs.items()}
    print(f"\n{'case':<16}{'wall s (med/best)':>19}{'CPU s (med/best)':>18}{'peak RSS MiB':>14}{'+ over start':>14}")
    for name, case in cases.items():
        print(
            f"{name:<16}{case['median_seconds']:>10.2f}/{case['best_seconds']:<8.2f}"
            f"{case['median_cpu_seconds']:>9.2f}/{case['best_cpu_seconds']:<8.2f}"
            f"{case['peak_rss_mib']:>14.0f}{case['peak_rss_increase_mib']:>14.0f}"
        )
    load_at_end = _load_average()
    report: dict[str, Any] = {
        "config": config,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_start": load_at_start,
            "load_average_end": load_at_end,
        },
        "cases": cases,
    }
    mine = cases["seqformer"]
    if "baseline" in cases:
        base = cases["baseline"]
        diff = 0.0
        for mine_run, base_run in zip(runs["seqformer"], runs["baseline"]):
            diff = max([diff] + [abs(mine_run["metrics"][k] - base_run["metrics"][k]) for k in METRIC_KEYS])
        if diff > 1e-6:
            raise SystemExit(f"seqformer and the baseline disagree by {diff}: {mine['metrics']} vs {base['metrics']}")
        paired_wall = [b["seconds"] / m["seconds"] for m, b in zip(runs["seqformer"], runs["baseline"])]
        paired_cpu = [b["cpu_seconds"] / m["cpu_seconds"] for m, b in zip(runs["seqformer"], runs["baseline"])]
        report["speedup"] = base["median_seconds"] / mine["median_seconds"]
        report["cpu_speedup"] = base["median_cpu_seconds"] / mine["median_cpu_seconds"]
        report["paired_speedups"] = {"wall": paired_wall, "cpu": paired_cpu}
        report["peak_rss_ratio"] = base["peak_rss_mib"] / mine["peak_rss_mib"]
        report["max_abs_metric_diff"] = diff
        print(
            f"\nspeed-up (medians) {report['speedup']:.1f}x wall, {report['cpu_speedup']:.1f}x CPU; per repetition "
            f"wall {', '.join(f'{r:.1f}' for r in paired_wall)}, CPU {', '.join(f'{r:.1f}' for r in paired_cpu)}; "
            f"peak RSS {mine['peak_rss_mib']:.0f} vs {base['peak_rss_mib']:.0f} MiB; the 12 numbers agree "
            f"(max |diff| = {diff:.1e}); AP = {mine['metrics']['AP']:.4f}"
        )
    print(f"load average (1/5/15 min): start {load_at_start}, end {load_at_end}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
