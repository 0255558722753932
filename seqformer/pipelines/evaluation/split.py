"""Held-out split of a YouTube-VIS training annotation file into train/val subsets by video.

The 2019 server no longer takes uploads, so local validation needs a held-out part of the training set, written as the
``instances_train_sub.json`` / ``instances_val_sub.json`` pair the original SeqFormer repository expects. Videos are
split whole (an instance never straddles the two), stratified by category: categories are visited from rarest to most
common and the not-yet-assigned videos containing each are shuffled (seeded) and cut at ``val_fraction``, so rare
categories land in both subsets whenever they appear in at least two videos.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from seqformer.pipelines.evaluation.io import PathLike, dump_json, load_json

logger = logging.getLogger(__name__)

TRAIN_NAME = "instances_train_sub.json"
VAL_NAME = "instances_val_sub.json"


def split_video_ids(data: dict[str, Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Train and val video ids (file order), stratified by category.

    Args:
        data: a YouTube-VIS annotation dict.
        val_fraction: share of videos for val, in (0, 1).
        seed: RNG seed; the same file, fraction and seed give the same split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    videos = [v["id"] for v in data["videos"]]
    categories_of: dict[Any, set[Any]] = defaultdict(set)
    for ann in data["annotations"]:
        categories_of[ann["video_id"]].add(ann["category_id"])
    frequency = Counter(c for cats in categories_of.values() for c in cats)
    rng = random.Random(seed)
    val: set[Any] = set()
    assigned: set[Any] = set()
    for category in sorted(frequency, key=lambda c: (frequency[c], str(c))):
        pool = [v for v in videos if v not in assigned and category in categories_of[v]]
        _cut(pool, val_fraction, rng, val, assigned)
    _cut([v for v in videos if v not in assigned], val_fraction, rng, val, assigned)  # videos without annotations
    return [v for v in videos if v not in val], [v for v in videos if v in val]


def _cut(pool: list[Any], val_fraction: float, rng: random.Random, val: set[Any], assigned: set[Any]) -> None:
    rng.shuffle(pool)
    num_val = int(round(val_fraction * len(pool)))
    if len(pool) >= 2:
        num_val = min(max(num_val, 1), len(pool) - 1)  # both sides get some of every category seen twice
    val.update(pool[:num_val])
    assigned.update(pool)


def subset(data: dict[str, Any], video_ids: list[Any]) -> dict[str, Any]:
    """The annotation dict restricted to ``video_ids`` (other top-level keys, e.g. ``info``, copied as is)."""
    keep = set(video_ids)
    out = {k: v for k, v in data.items() if k not in ("videos", "annotations")}
    out["videos"] = [v for v in data["videos"] if v["id"] in keep]
    out["annotations"] = [a for a in data["annotations"] if a["video_id"] in keep]
    return out


def split_annotations(path: PathLike, out_dir: PathLike, val_fraction: float = 0.1, seed: int = 0) -> dict[str, Path]:
    """Split a training annotation file into ``instances_train_sub.json`` and ``instances_val_sub.json``.

    Args:
        path: YouTube-VIS annotation file (``.json`` or ``.json.gz``).
        out_dir: folder for the two files (created if missing).
        val_fraction: share of videos held out, in (0, 1).
        seed: RNG seed.

    Returns:
        ``{"train": path, "val": path}``.
    """
    data = load_json(path, "annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("videos", "annotations")):
        raise ValueError(f"annotation file {str(path)!r} must be a YouTube-VIS JSON object with videos and annotations")
    train_ids, val_ids = split_video_ids(data, val_fraction, seed)
    out_dir = Path(out_dir)
    paths = {
        "train": dump_json(subset(data, train_ids), out_dir / TRAIN_NAME),
        "val": dump_json(subset(data, val_ids), out_dir / VAL_NAME),
    }
    logger.info(
        "split %d videos into %d train / %d val (seed %d) in %s",
        len(data["videos"]),
        len(train_ids),
        len(val_ids),
        seed,
        out_dir,
    )
    return paths
