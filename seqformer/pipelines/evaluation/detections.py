"""YouTube-VIS results (predicted tracks) validated and indexed for scoring.

Official rules reproduced here: every result must name a ground-truth video (else the official ``loadRes`` fails);
``id``/``iscrowd`` in results are ignored; a frame is present when its entry is truthy (an RLE of an empty mask is
present with area 0); a track's area for area ranges is the mean of its non-zero frame areas; results in categories
missing from the ground truth are dropped.

Two ways in, one result: :func:`parse_results` takes parsed JSON (a list of dicts), :func:`read_results_file` reads a
file with the compiled reader, which never builds a Python object per frame, and hands files of any other shape to
the general path.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqformer.pipelines.evaluation._extension import load
from seqformer.pipelines.evaluation.frames import FrameTable, build_table
from seqformer.pipelines.evaluation.ground_truth import GroundTruth
from seqformer.pipelines.evaluation.io import PathLike, Problems, load_json, read_writable

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class Detections:
    """Validated results.

    Attributes:
        video_ids: per entry its video id; category_ids: per entry its category id.
        scores: float64 ``[num_entries]``.
        frames: the masks, one owner per entry (areas filled).
        avg_areas: float64 ``[num_entries]`` mean of the non-zero frame areas (0 if none).
    """

    video_ids: list[Any]
    category_ids: list[Any]
    scores: np.ndarray
    frames: FrameTable
    avg_areas: np.ndarray


def read_results_file(path: PathLike, gt: GroundTruth, problems: Problems, source: str | None = None) -> Detections:
    """Read and validate a results ``.json`` / ``.json.gz`` file (see :func:`parse_results` for the rules).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON or cannot be scored.
    """
    path = Path(path)
    source = source or str(path)
    buf = read_writable(path, "results file")
    parsed = load().read_results(buf)
    if isinstance(parsed, str):
        logger.info("%s: read with the general JSON parser (%s)", source, parsed)
        return parse_results(load_json(path, "results file"), gt, problems, source)
    video_ids, category_ids = (np.frombuffer(b, dtype=np.int64).tolist() for b in parsed[:2])
    scores = np.frombuffer(parsed[2], dtype=np.float64).copy()
    offsets, start, length, height, width, area = (np.frombuffer(b, dtype=np.int64).copy() for b in parsed[3:9])
    for index, video_id in enumerate(video_ids):
        if video_id not in gt.videos:
            raise ValueError(_unknown_video(source, index, video_id))
    table = FrameTable(buf, start, length, height, width, area, offsets)
    first_bad = parsed[9]
    return _finish(video_ids, category_ids, scores, table, gt, problems, source, None if first_bad < 0 else first_bad)


def parse_results(results: Any, gt: GroundTruth, problems: Problems, source: str = "results") -> Detections:
    """Validate a YouTube-VIS results list against the ground truth.

    Args:
        results: list of ``{"video_id", "category_id", "score", "segmentations"}`` dicts, ``segmentations`` holding a
            compressed RLE or None per frame.
        gt: the parsed ground truth.
        problems: collects entries the official evaluator scores silently although they are malformed.
        source: how messages name the input.

    Raises:
        ValueError: input that cannot be scored (not a list, empty, unknown video, missing keys, corrupt RLE).
    """
    if not isinstance(results, list):
        raise ValueError(f"{source}: expected a JSON list of result objects, got {type(results).__name__}")
    if not results:
        raise ValueError(
            f"{source}: the results list is empty; there is nothing to score (write at least one prediction per video)"
        )
    frames: list[list[tuple[int, int, str] | None]] = []
    for index, entry in enumerate(results):
        _check_entry(entry, index, gt, source)
        where = f"{source}[{index}] (video_id={entry['video_id']!r})"
        frames.append([_frame(seg, where, f) if seg else None for f, seg in enumerate(entry["segmentations"])])
    table = build_table(frames)
    video_ids = [entry["video_id"] for entry in results]
    category_ids = [entry["category_id"] for entry in results]
    scores = np.array([float(entry["score"]) for entry in results], dtype=np.float64)
    return _finish(video_ids, category_ids, scores, table, gt, problems, source, table.compute_areas())


def _frame(seg: Any, where: str, frame: int) -> tuple[int, int, str]:
    """``(height, width, counts)`` of one present frame, or a ValueError naming it."""
    if type(seg) is dict:
        size, counts = seg.get("size"), seg.get("counts")
        if type(counts) is str and type(size) is list and len(size) == 2 and counts.isascii():
            height, width = size
            if type(height) is int and type(width) is int and height >= 0 and width >= 0:
                return height, width, counts
    if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
        raise ValueError(
            f"{where} frame {frame}: expected a compressed RLE {{'size': [h, w], 'counts': str}} or null, "
            f"got {seg!r:.100}"
        )
    size, counts = seg["size"], seg["counts"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        raise ValueError(f"{where} frame {frame}: RLE 'size' must be [height, width], got {size!r:.100}")
    if isinstance(counts, list):
        raise ValueError(
            f"{where} frame {frame}: 'counts' is an uncompressed list; results need compressed RLE "
            "strings (encode with pycocotools.mask.encode or seqformer's results writer)"
        )
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", "replace")
    if not isinstance(counts, str):
        raise ValueError(f"{where} frame {frame}: 'counts' must be a compressed RLE string, got {counts!r:.60}")
    if not counts.isascii():
        raise ValueError(
            f"{where} frame {frame}: RLE cannot be decoded: characters outside '0'..'o' in compressed counts "
            f"{counts[:40]!r}"
        )
    return int(size[0]), int(size[1]), counts


def _unknown_video(source: str, index: int, video_id: Any) -> str:
    return (
        f"{source}[{index}]: video_id {video_id!r} is not a video of the ground truth; results "
        "must only name ground-truth videos (is this the right annotation file?)"
    )


def _check_entry(entry: Any, index: int, gt: GroundTruth, source: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(
            f"{source}[{index}]: expected an object with {list(REQUIRED_KEYS)}, got {type(entry).__name__}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(
            f"{source}[{index}] (video_id={entry.get('video_id')!r}): missing {missing}; each result needs "
            f"{list(REQUIRED_KEYS)}"
        )
    try:
        known = entry["video_id"] in gt.videos
    except TypeError:
        known = False
    if not known:
        raise ValueError(_unknown_video(source, index, entry["video_id"]))
    if not isinstance(entry["score"], numbers.Real):
        raise ValueError(
            f"{source}[{index}] (video_id={entry['video_id']!r}): score must be a number, got {entry['score']!r:.50}"
        )
    if not isinstance(entry["segmentations"], list):
        raise ValueError(
            f"{source}[{index}] (video_id={entry['video_id']!r}): segmentations must be a list with one "
            f"RLE or null per frame, got {type(entry['segmentations']).__name__}"
        )


def _finish(
    video_ids: list[Any],
    category_ids: list[Any],
    scores: np.ndarray,
    table: FrameTable,
    gt: GroundTruth,
    problems: Problems,
    source: str,
    bad: int | None,
) -> Detections:
    """Warnings for what the official evaluator accepts silently and mean areas, once the areas are known.

    ``bad`` is the first frame that is not a valid mask of its size (from :meth:`FrameTable.compute_areas`), if any.
    """
    if bad is not None:
        index = int(np.searchsorted(table.offsets, bad, side="right")) - 1
        raise ValueError(
            f"{source}[{index}] (video_id={video_ids[index]!r}) frame {bad - int(table.offsets[index])}: "
            f"RLE cannot be decoded: {table.invalid_reason(bad)}"
        )
    _warn(video_ids, category_ids, scores, table, gt, problems, source)
    counts = table.frame_counts()
    owner = np.repeat(np.arange(len(counts)), counts)
    sums = np.bincount(owner, weights=table.area, minlength=len(counts))
    nonzero = np.bincount(owner, weights=table.area > 0, minlength=len(counts))
    avg_areas = np.divide(sums, nonzero, out=np.zeros(len(counts)), where=nonzero > 0)
    return Detections(video_ids, category_ids, scores, table, avg_areas)


def _warn(
    video_ids: list[Any],
    category_ids: list[Any],
    scores: np.ndarray,
    table: FrameTable,
    gt: GroundTruth,
    problems: Problems,
    source: str,
) -> None:
    counts = table.frame_counts()
    videos = [gt.videos[v] for v in video_ids]
    present = table.start >= 0
    video_h = np.repeat([v.height for v in videos], counts)
    video_w = np.repeat([v.width for v in videos], counts)
    odd = present & ((table.height != video_h) | (table.width != video_w))
    odd_owners = np.zeros(len(counts), dtype=bool)
    odd_owners[np.searchsorted(table.offsets, np.flatnonzero(odd), side="right") - 1] = True
    lengths = np.array([-1 if v.length is None else v.length for v in videos], dtype=np.int64)
    unknown = np.fromiter((c not in gt.category_names for c in category_ids), dtype=bool, count=len(category_ids))
    flagged = unknown | ((lengths >= 0) & (counts != lengths)) | odd_owners | ~np.isfinite(scores)
    for index in np.flatnonzero(flagged).tolist():  # messages for the flagged entries only, in file order
        video_id, category_id, video = video_ids[index], category_ids[index], videos[index]
        where = f"{source}[{index}] (video_id={video_id!r})"
        if unknown[index]:
            problems.warn(
                f"{where}: category_id {category_id!r} is not a ground-truth category; the "
                "official evaluator drops this prediction"
            )
        if video.length is not None and counts[index] != video.length:
            problems.warn(
                f"{where}: {counts[index]} segmentations for a video of {video.length} frames; frames are "
                "paired up to the shorter of the two lists, as in the official evaluator"
            )
        if odd_owners[index]:
            first = int(table.offsets[index])
            frames = np.flatnonzero(odd[first : first + counts[index]])
            sizes = sorted({(int(table.height[first + f]), int(table.width[first + f])) for f in frames})
            problems.warn(
                f"{where}: masks of size {sizes} in a {video.height}x{video.width} video (frames "
                f"{frames[:10].tolist()}); such frames add nothing to intersection or union where the ground truth "
                "is present"
            )
        if not np.isfinite(scores[index]):
            problems.warn(f"{where}: score {scores[index]!r} is not finite")
