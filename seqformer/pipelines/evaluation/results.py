"""Writing YouTube-VIS results: ``results.json`` for local scoring and ``results.zip`` for the challenge server.

A results file is a JSON list of ``{"video_id", "category_id", "score", "segmentations"}`` with one compressed RLE
(``{"size": [h, w], "counts": str}``) or null per frame. The CodaLab server takes a zip with ``results.json`` at its
root (no folder inside).
"""

from __future__ import annotations

import json
import logging
import numbers
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from seqformer.pipelines.evaluation import rle as rle_utils
from seqformer.pipelines.evaluation.io import PathLike, dump_json

logger = logging.getLogger(__name__)

ZIP_MEMBER = "results.json"


def to_result_entries(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise result entries to plain JSON types, checking each one.

    Args:
        results: dicts with ``video_id``, ``category_id``, ``score`` and ``segmentations`` (per frame an RLE dict with
            str or bytes counts, or None; or a bool array ``[num_frames, h, w]``, encoded here).

    Raises:
        ValueError: an entry lacks a key or holds an unusable value (the message names its index and video).
    """
    entries = []
    for index, entry in enumerate(results):
        where = f"results[{index}] (video_id={entry.get('video_id')!r})" if isinstance(entry, dict) else ""
        if not isinstance(entry, dict) or any(
            k not in entry for k in ("video_id", "category_id", "score", "segmentations")
        ):
            raise ValueError(f"results[{index}]{where}: need video_id, category_id, score and segmentations")
        segs = entry["segmentations"]
        if hasattr(segs, "ndim"):
            segs = rle_utils.encode_masks(np.asarray(segs.cpu() if hasattr(segs, "cpu") else segs))
        if not isinstance(entry["score"], numbers.Real):
            raise ValueError(f"{where}: score must be a number, got {entry['score']!r:.50}")
        entries.append(
            {
                "video_id": _plain(entry["video_id"]),
                "category_id": _plain(entry["category_id"]),
                "score": float(entry["score"]),
                "segmentations": [_frame(s, where, f) for f, s in enumerate(segs)],
            }
        )
    return entries


def write_results_json(results: Iterable[dict[str, Any]], path: PathLike) -> Path:
    """Write a YouTube-VIS results JSON (gzipped if the name ends in ``.gz``); returns the path."""
    path = dump_json(to_result_entries(results), path)
    logger.info("wrote %s", path)
    return path


def write_results_zip(results: Iterable[dict[str, Any]], path: PathLike) -> Path:
    """Write ``results.zip`` holding ``results.json`` at its root, as the YouTube-VIS challenge server expects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ZIP_MEMBER, json.dumps(to_result_entries(results)))
    logger.info("wrote %s (%s inside)", path, ZIP_MEMBER)
    return path


def _frame(seg: Any, where: str, frame: int) -> dict[str, Any] | None:
    if seg is None:
        return None
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ValueError(f"{where} frame {frame}: expected an RLE {{'size', 'counts'}} or None, got {seg!r:.80}")
    counts = seg["counts"]
    if isinstance(counts, list):
        return rle_utils.compress(seg)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if not isinstance(counts, str):
        raise ValueError(f"{where} frame {frame}: counts must be a compressed string, got {type(counts).__name__}")
    return {"size": [int(seg["size"][0]), int(seg["size"][1])], "counts": counts}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
