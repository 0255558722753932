"""YouTube-VIS results (predicted tracks) validated and indexed for scoring.

Official rules reproduced here: every result must name a ground-truth video (else the official ``loadRes`` fails);
``id``/``iscrowd`` in results are ignored; a frame is present when its entry is truthy (an RLE of an empty mask is
present with area 0); a track's area for area ranges is the mean of its non-zero frame areas; results in categories
missing from the ground truth are dropped.
"""

from __future__ import annotations

import logging
import numbers
from collections import defaultdict
from dataclasses import dataclass
from itertools import compress
from typing import Any

import numpy as np

from seqformer.pipelines.evaluation import rle as rle_utils
from seqformer.pipelines.evaluation.ground_truth import GroundTruth
from seqformer.pipelines.evaluation.io import Problems

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("video_id", "category_id", "score", "segmentations")


@dataclass
class Detections:
    """Validated results, all frames of all entries laid end to end.

    Attributes:
        scores: float64 ``[num_entries]``.
        segs: per entry its per-frame list (RLE dict or None).
        frame_areas: per entry an int64 array of mask areas (0 for absent frames).
        avg_areas: float64 ``[num_entries]`` mean of the non-zero frame areas (0 if none).
        odd_sizes: entry -> {frame: (h, w)} for frames whose mask size differs from the video's.
        groups: (video id, category id) -> entry indices in file order (known categories only).
    """

    scores: np.ndarray
    segs: list[list[Any]]
    frame_areas: list[np.ndarray]
    avg_areas: np.ndarray
    odd_sizes: dict[int, dict[int, tuple[int, int]]]
    groups: dict[tuple[Any, Any], list[int]]


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
    groups: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    odd_sizes: dict[int, dict[int, tuple[int, int]]] = {}
    for index, entry in enumerate(results):
        _check_entry(entry, index, gt, source)
        video = gt.videos[entry["video_id"]]
        where = f"{source}[{index}] (video_id={entry['video_id']!r})"
        if entry["category_id"] in gt.category_names:
            groups[(entry["video_id"], entry["category_id"])].append(index)
        else:
            problems.warn(
                f"{where}: category_id {entry['category_id']!r} is not a ground-truth category; the "
                "official evaluator drops this prediction"
            )
        segs = entry["segmentations"]
        if video.length is not None and len(segs) != video.length:
            problems.warn(
                f"{where}: {len(segs)} segmentations for a video of {video.length} frames; frames are "
                "paired up to the shorter of the two lists, as in the official evaluator"
            )
        size = [video.height, video.width]
        try:
            odd = [frame for frame, seg in enumerate(segs) if seg and seg["size"] != size]
        except (TypeError, KeyError, IndexError):
            odd = list(range(len(segs)))  # let the careful check below name the problem
        if odd:
            odd_sizes[index] = _check_frames(segs, odd, video, where)
            if odd_sizes[index]:
                problems.warn(
                    f"{where}: masks of size {sorted(set(odd_sizes[index].values()))} in a "
                    f"{video.height}x{video.width} video (frames {sorted(odd_sizes[index])[:10]}); such frames "
                    "add nothing to intersection or union where the ground truth is present"
                )
            else:
                del odd_sizes[index]
        score = entry["score"]
        if not np.isfinite(score):
            problems.warn(f"{where}: score {score!r} is not finite")
    segs_lists = [entry["segmentations"] for entry in results]
    frame_areas, avg_areas = _frame_areas(segs_lists, results, gt, source)
    scores = np.array([float(entry["score"]) for entry in results], dtype=np.float64)
    return Detections(scores, segs_lists, frame_areas, avg_areas, odd_sizes, dict(groups))


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
        raise ValueError(
            f"{source}[{index}]: video_id {entry['video_id']!r} is not a video of the ground truth; results "
            "must only name ground-truth videos (is this the right annotation file?)"
        )
    if not isinstance(entry["score"], numbers.Real):
        raise ValueError(
            f"{source}[{index}] (video_id={entry['video_id']!r}): score must be a number, got {entry['score']!r:.50}"
        )
    if not isinstance(entry["segmentations"], list):
        raise ValueError(
            f"{source}[{index}] (video_id={entry['video_id']!r}): segmentations must be a list with one "
            f"RLE or null per frame, got {type(entry['segmentations']).__name__}"
        )


def _check_frames(segs: list[Any], frames: list[int], video: Any, where: str) -> dict[int, tuple[int, int]]:
    """Check the given frames' RLE structure; returns frame -> size for masks whose size is not the video's."""
    odd: dict[int, tuple[int, int]] = {}
    for frame in frames:
        seg = segs[frame]
        if not seg:
            continue
        if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
            raise ValueError(
                f"{where} frame {frame}: expected a compressed RLE {{'size': [h, w], 'counts': str}} or "
                f"null, got {seg!r:.100}"
            )
        size = seg["size"]
        if not (
            isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)
        ):
            raise ValueError(f"{where} frame {frame}: RLE 'size' must be [height, width], got {size!r:.100}")
        if (size[0], size[1]) != (video.height, video.width):
            odd[frame] = (int(size[0]), int(size[1]))
    return odd


def offsets_of(lengths: list[int]) -> np.ndarray:
    """int64 ``[len(lengths) + 1]`` start of each list when the lists are laid end to end."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _frame_areas(
    segs_lists: list[list[Any]],
    results: list[Any],
    gt: GroundTruth,
    source: str,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-entry frame areas and mean non-zero areas, after checking every present RLE decodes."""
    lengths = [len(segs) for segs in segs_lists]
    flat = [seg for segs in segs_lists for seg in segs]
    present = np.fromiter(map(bool, flat), dtype=bool, count=len(flat))
    present_segs = list(compress(flat, present))
    owner = np.repeat(np.arange(len(segs_lists)), lengths)[present]
    try:
        counts = [seg["counts"] for seg in present_segs]
        bad = rle_utils.check_compressed_many(counts)
    except (TypeError, KeyError):  # a frame that is not a dict, lacks counts, or has non-str counts
        counts = [seg.get("counts") if isinstance(seg, dict) else None for seg in present_segs]
        counts = [c.decode("ascii", "replace") if isinstance(c, bytes) else c for c in counts]
        wrong_type = [i for i, c in enumerate(counts) if type(c) is not str]
        bad = wrong_type[0] if wrong_type else rle_utils.check_compressed_many(counts)
    if bad is not None:
        _raise_bad_rle(results, segs_lists, int(owner[bad]), source)
    present_areas = rle_utils.areas(present_segs)
    limits = np.array([gt.videos[e["video_id"]].height * gt.videos[e["video_id"]].width for e in results])
    too_big = np.flatnonzero(present_areas > limits[owner])
    for position in too_big:  # a mask of another size than the video's may legitimately be larger
        height, width = present_segs[position]["size"]
        if present_areas[position] > int(height) * int(width):
            _raise_bad_rle(results, segs_lists, int(owner[position]), source)
    all_areas = np.zeros(len(flat), dtype=np.int64)
    all_areas[present] = present_areas
    offsets = offsets_of(lengths)
    nonzero = all_areas > 0
    sums = np.add.reduceat(np.append(all_areas, 0), offsets[:-1]) if len(flat) else np.zeros(len(lengths))
    nums = np.add.reduceat(np.append(nonzero, False).astype(np.int64), offsets[:-1]) if len(flat) else sums
    empty = np.asarray(lengths) == 0  # reduceat gives the next element for empty slices
    sums, nums = np.where(empty, 0, sums), np.where(empty, 0, nums)
    avg_areas = np.divide(sums.astype(np.float64), nums, out=np.zeros(len(lengths)), where=nums > 0)
    frame_areas = [all_areas[offsets[i] : offsets[i + 1]] for i in range(len(lengths))]
    return frame_areas, avg_areas


def _raise_bad_rle(results: list[Any], segs_lists: list[list[Any]], index: int, source: str) -> None:
    """Find the first undecodable frame of entry ``index`` and raise a ValueError naming it."""
    where = f"{source}[{index}] (video_id={results[index]['video_id']!r})"
    for frame, seg in enumerate(segs_lists[index]):
        if not seg:
            continue
        counts = seg.get("counts") if isinstance(seg, dict) else None
        if isinstance(counts, list):
            raise ValueError(
                f"{where} frame {frame}: 'counts' is an uncompressed list; results need compressed RLE "
                "strings (encode with pycocotools.mask.encode or seqformer's results writer)"
            )
        if not isinstance(counts, (str, bytes)):
            raise ValueError(f"{where} frame {frame}: 'counts' must be a compressed RLE string, got {counts!r:.60}")
        try:
            reason = rle_utils.check_runs(rle_utils.decode_counts(counts), seg["size"])
        except ValueError as err:
            reason = str(err)
        if reason is not None:
            raise ValueError(f"{where} frame {frame}: RLE cannot be decoded: {reason}")
    raise ValueError(f"{where}: an RLE cannot be decoded")
