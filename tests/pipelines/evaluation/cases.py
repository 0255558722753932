"""Small YouTube-VIS cases for the evaluation tests: hand-drawn masks and randomised ones."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def rle(mask: np.ndarray) -> dict:
    """Compressed RLE (str counts) of one bool ``[h, w]`` mask."""
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(out["size"][0]), int(out["size"][1])], "counts": out["counts"].decode("ascii")}


def uncompressed(mask: np.ndarray) -> dict:
    """Uncompressed RLE (list counts) of one bool ``[h, w]`` mask, as YouTube-VIS GT files store it."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": list(mask.shape), "counts": runs}


def box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """bool ``[h, w]`` with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def gt_file(videos: list[tuple[int, int, int, int]], categories: list[int], tracks: list[dict]) -> dict:
    """A GT dict. ``videos``: (id, h, w, length); ``tracks``: dicts with id, video_id, category_id, masks (list of
    bool arrays or None), optional iscrowd and areas (default: mask areas, null where absent)."""
    anns = []
    for t in tracks:
        masks = t["masks"]
        areas = t.get("areas", [int(m.sum()) if m is not None else None for m in masks])
        segs = [uncompressed(m) if m is not None else None for m in masks]
        anns.append(
            {
                "id": t["id"],
                "video_id": t["video_id"],
                "category_id": t["category_id"],
                "iscrowd": t.get("iscrowd", 0),
                "segmentations": segs,
                "areas": areas,
                "bboxes": [None] * len(masks),
            }
        )
    return {
        "videos": [
            {"id": v, "height": h, "width": w, "length": n, "file_names": [f"{v}/{i:05d}.jpg" for i in range(n)]}
            for v, h, w, n in videos
        ],
        "categories": [{"id": c, "name": f"cat{c}"} for c in categories],
        "annotations": anns,
    }


def result(video_id: int, category_id: int, score: float, masks: list) -> dict:
    """One results entry from bool masks (None → null frame)."""
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": score,
        "segmentations": [rle(m) if m is not None else None for m in masks],
    }


def random_case(seed: int, malformed: bool = False) -> tuple[dict, list[dict]]:
    """A random case exercising ties, absent frames, crowd, empty masks, >100 predictions and area boundaries."""
    rng = np.random.default_rng(seed)
    scale = int(rng.choice([1, 4, 24, 48]))  # 24 and 48: masks cross the 128**2 / 256**2 area limits
    h, w = 6 * scale, 8 * scale
    video_ids = rng.choice(np.arange(1, 50), size=int(rng.integers(2, 5)), replace=False).tolist()
    categories = rng.choice(np.arange(1, 9), size=int(rng.integers(2, 5)), replace=False).tolist()
    videos = [(int(v), h, w, int(rng.integers(2, 6))) for v in video_ids]
    tracks, next_id = [], int(rng.integers(0, 2))  # sometimes an annotation id 0
    for vid, _, _, length in videos:
        for _ in range(int(rng.integers(0, 4))):
            masks = [_blob(rng, h, w, scale) if rng.random() > 0.25 else None for _ in range(length)]
            track = {
                "id": next_id,
                "video_id": vid,
                "category_id": int(rng.choice(categories)),
                "masks": masks,
                "iscrowd": int(rng.random() < 0.15),
            }
            if rng.random() < 0.2:
                track["areas"] = [
                    float(a) if a is not None else None
                    for a in rng.choice([None, 0, 5, 16384, 65536], size=length).tolist()
                ]
            tracks.append(track)
            next_id += int(rng.integers(1, 4))
    results = []
    score_pool = np.round(rng.random(6), 2)  # few distinct scores: many ties
    for vid, _, _, length in videos:
        own = [t for t in tracks if t["video_id"] == vid]
        num = int(rng.choice([0, 3, 8, 20, 110])) if rng.random() < 0.9 else 0
        for _ in range(num):
            if own and rng.random() < 0.6:
                src = own[int(rng.integers(len(own)))]
                masks = [
                    _jitter(rng, m, h, w, scale) if m is not None else _maybe(rng, h, w, scale) for m in src["masks"]
                ]
                category = src["category_id"] if rng.random() < 0.8 else int(rng.choice(categories))
            else:
                masks = [_maybe(rng, h, w, scale) for _ in range(length)]
                category = int(rng.choice(categories))
            results.append(result(vid, category, float(rng.choice(score_pool)), masks))
    if not results:
        results.append(result(videos[0][0], categories[0], 0.5, [_blob(rng, h, w, scale)] * videos[0][3]))
    if malformed:
        _break_some(rng, results, categories, h, w, scale)
    return gt_file(videos, categories + [99], tracks), results


def _blob(rng, h, w, scale):
    if rng.random() < 0.3:  # a big one (large at scale 48)
        y0, x0 = int(rng.integers(0, max(1, h // 8))), int(rng.integers(0, max(1, w // 8)))
        return box(h, w, y0, x0, h - int(rng.integers(0, max(1, h // 8))), w - int(rng.integers(0, max(1, w // 8))))
    y0, x0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
    return box(h, w, y0, x0, int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1)))


def _maybe(rng, h, w, scale):
    roll = rng.random()
    return None if roll < 0.3 else np.zeros((h, w), bool) if roll < 0.45 else _blob(rng, h, w, scale)


def _jitter(rng, mask, h, w, scale):
    roll = rng.random()
    if roll < 0.4:
        return mask
    step = max(1, scale // 8) if roll < 0.8 else max(1, scale // 2)
    shifted = np.roll(mask, (int(rng.integers(-1, 2)) * step, int(rng.integers(-1, 2)) * step), (0, 1))
    return shifted | _blob(rng, h, w, scale) if rng.random() < 0.1 else shifted


def _break_some(rng, results, categories, h, w, scale):
    for entry in results:
        roll = rng.random()
        if roll < 0.1:
            entry["category_id"] = 77  # not a GT category
        elif roll < 0.2:
            entry["segmentations"] = entry["segmentations"][: max(0, len(entry["segmentations"]) - 1)]
        elif roll < 0.3:
            entry["segmentations"] = entry["segmentations"] + [rle(_blob(rng, h, w, scale))]
        elif roll < 0.4 and entry["segmentations"]:
            frame = int(rng.integers(len(entry["segmentations"])))
            entry["segmentations"][frame] = rle(np.ones((h + 1, w), bool))  # wrong size
