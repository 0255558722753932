"""YouTube-VIS ground truth as the official evaluator sees it: videos, sorted categories, tracks per (video, category).

Rules reproduced from the official ``ytvos.py`` / ``ytvoseval.py`` (see :mod:`.ytvis_eval`):
the GT ``ignore`` flag is ``iscrowd``; a track's area for area ranges is the mean of its non-null, non-zero ``areas``
entries; annotations are collected video by video (sorted ids) in file order, and when two annotations share an ``id``
both places hold the *last* one (the official index keeps one annotation per id).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import _mask as coco_mask

from seqformer.pipelines.evaluation import rle as rle_utils
from seqformer.pipelines.evaluation.frames import FrameTable, build_table
from seqformer.pipelines.evaluation.io import Problems

logger = logging.getLogger(__name__)


@dataclass
class Video:
    """One ground-truth video: ``length`` is its frame count (``length`` field, else ``len(file_names)``, else None)."""

    id: Any
    height: int
    width: int
    length: int | None


@dataclass
class GtTrack:
    """One ground-truth instance track.

    Attributes:
        ann_id: the annotation ``id`` (0 is a valid id that the official matching treats as "unmatched").
        crowd: ``int(iscrowd)`` is non-zero: the track may absorb any number of predictions.
        ignore: ``iscrowd`` is truthy: the track is never counted as a positive.
        avg_area: mean of the non-null, non-zero entries of ``areas`` (0 if none).
        segs: per frame a compressed RLE dict, or None where the instance is absent.
        odd_sizes: frame -> (h, w) for frames whose mask size differs from the video's.
        index: the track's owner index in :attr:`GroundTruth.frames`.
    """

    ann_id: Any
    crowd: bool
    ignore: bool
    avg_area: float
    segs: list[dict[str, Any] | None]
    odd_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    index: int = -1


@dataclass
class GroundTruth:
    """Parsed ground truth.

    Attributes:
        videos: video id -> :class:`Video`.
        video_ids: sorted video ids (the official evaluation order).
        category_ids: sorted, de-duplicated category ids.
        category_names: category id -> name.
        tracks: (video id, category id) -> tracks in official order.
        problems: warnings raised while parsing.
        frames: the masks of all tracks, one owner per track (see :attr:`GtTrack.index`), areas filled.
    """

    videos: dict[Any, Video]
    video_ids: list[Any]
    category_ids: list[Any]
    category_names: dict[Any, str]
    tracks: dict[tuple[Any, Any], list[GtTrack]]
    problems: list[str]
    frames: FrameTable


def parse_ground_truth(data: Any, problems: Problems | None = None, source: str = "ground truth") -> GroundTruth:
    """Validate and index a YouTube-VIS annotation dict.

    Args:
        data: the parsed JSON (``videos``, ``categories``, ``annotations``).
        problems: where to report malformed entries the official evaluator accepts (default: a new lenient one).
        source: how messages name the input (e.g. the file path).

    Raises:
        ValueError: the input cannot be scored (missing keys, wrong types, corrupt masks).
    """
    problems = problems or Problems()
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: expected a JSON object with videos/categories/annotations, got {type(data).__name__}"
        )
    for key in ("videos", "categories", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{source}: key {key!r} must be a list (a YouTube-VIS annotation file), got "
                f"{type(data.get(key)).__name__}"
            )
    videos = _parse_videos(data["videos"], source)
    category_names = _parse_categories(data["categories"], source)
    category_ids = sorted(category_names)
    anns = data["annotations"]
    by_id: dict[Any, dict[str, Any]] = {}
    by_video: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for index, ann in enumerate(anns):
        _check_annotation(ann, index, source)
        if ann["id"] in by_id:
            problems.warn(
                f"{source}: annotations[{index}] (video_id={ann['video_id']!r}) repeats annotation id "
                f"{ann['id']!r}; the official evaluator keeps only the last annotation with that id"
            )
        by_id[ann["id"]] = ann
        if ann["video_id"] not in videos:
            problems.warn(
                f"{source}: annotations[{index}] refers to video_id {ann['video_id']!r}, which is not in "
                "'videos'; it is ignored"
            )
        elif ann["category_id"] not in category_names:
            problems.warn(
                f"{source}: annotations[{index}] (video_id={ann['video_id']!r}) has category_id "
                f"{ann['category_id']!r}, which is not in 'categories'; it is ignored"
            )
        by_video[ann["video_id"]].append(ann)
    index_of = {id(ann): i for i, ann in enumerate(anns)}
    parsed: dict[int, GtTrack] = {}
    tracks: dict[tuple[Any, Any], list[GtTrack]] = defaultdict(list)
    video_ids = sorted(videos)
    for video_id in video_ids:
        for ann in by_video.get(video_id, []):
            if ann["category_id"] not in category_names:
                continue
            kept = by_id[ann["id"]]  # the official index holds one annotation per id: the last one
            if id(kept) not in parsed:
                parsed[id(kept)] = _parse_track(kept, index_of[id(kept)], videos, problems, source)
            tracks[(kept["video_id"], kept["category_id"])].append(parsed[id(kept)])
    frames = _frame_table(list(parsed.values()))
    return GroundTruth(videos, video_ids, category_ids, category_names, dict(tracks), problems.messages, frames)


def _parse_videos(entries: list[Any], source: str) -> dict[Any, Video]:
    videos: dict[Any, Video] = {}
    for index, video in enumerate(entries):
        if not isinstance(video, dict) or not all(k in video for k in ("id", "height", "width")):
            raise ValueError(
                f"{source}: videos[{index}] must be an object with id, height and width, got {video!r:.200}"
            )
        length = video.get("length", len(video["file_names"]) if isinstance(video.get("file_names"), list) else None)
        videos[video["id"]] = Video(video["id"], int(video["height"]), int(video["width"]), length)
    return videos


def _parse_categories(entries: list[Any], source: str) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for index, category in enumerate(entries):
        if not isinstance(category, dict) or "id" not in category:
            raise ValueError(f"{source}: categories[{index}] must be an object with an 'id', got {category!r:.200}")
        names[category["id"]] = str(category.get("name", category["id"]))
    return names


def _check_annotation(ann: Any, index: int, source: str) -> None:
    if not isinstance(ann, dict):
        raise ValueError(f"{source}: annotations[{index}] must be an object, got {type(ann).__name__}")
    missing = [k for k in ("id", "video_id", "category_id", "segmentations", "areas") if k not in ann]
    if missing:
        raise ValueError(
            f"{source}: annotations[{index}] (video_id={ann.get('video_id')!r}) lacks {missing}; "
            "YouTube-VIS tracks need id, video_id, category_id, segmentations and areas"
        )
    for key in ("segmentations", "areas"):
        if not isinstance(ann[key], list):
            raise ValueError(
                f"{source}: annotations[{index}].{key} must be a list (one entry per frame), got "
                f"{type(ann[key]).__name__}"
            )


def _parse_track(ann: dict[str, Any], index: int, videos: dict[Any, Video], problems: Problems, source: str) -> GtTrack:
    where = f"{source}: annotations[{index}] (id={ann['id']!r}, video_id={ann['video_id']!r})"
    video = videos[ann["video_id"]]
    if "iscrowd" not in ann:
        problems.warn(f"{where} has no 'iscrowd'; treating it as 0 (the official evaluator would crash)")
    iscrowd = ann.get("iscrowd", 0)
    if ann["id"] == 0:
        problems.warn(
            f"{where} has annotation id 0; the official evaluator treats predictions matched to it as false "
            "positives and so does this one"
        )
    if video.length is not None and len(ann["segmentations"]) != video.length:
        problems.warn(f"{where} has {len(ann['segmentations'])} segmentations for a video of {video.length} frames")
    listed = [a for a in ann["areas"] if a]
    try:
        avg_area = float(np.array(listed).mean()) if listed else 0.0
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: 'areas' must hold numbers or null, got {ann['areas']!r:.200}") from err
    track = GtTrack(ann["id"], bool(int(iscrowd)), bool(iscrowd), avg_area, [])
    uncompressed: list[int] = []
    for frame, seg in enumerate(ann["segmentations"]):
        track.segs.append(_checked_rle(seg, video, f"{where} frame {frame}") if seg else None)
        if seg and isinstance(track.segs[-1]["counts"], list):
            uncompressed.append(frame)
        size = (int(track.segs[-1]["size"][0]), int(track.segs[-1]["size"][1])) if seg else None
        if size is not None and size != (video.height, video.width):
            track.odd_sizes[frame] = size
    if uncompressed:  # one C call for all of the track's uncompressed frames, as the official frPyObjects does
        encoded = coco_mask.frUncompressedRLE([track.segs[f] for f in uncompressed], video.height, video.width)
        for frame, rle in zip(uncompressed, encoded):
            track.segs[frame] = {"size": track.segs[frame]["size"], "counts": rle["counts"]}
    if track.odd_sizes:
        problems.warn(
            f"{where} has masks of size {sorted(set(track.odd_sizes.values()))} in a "
            f"{video.height}x{video.width} video (frames {sorted(track.odd_sizes)[:10]})"
        )
    return track


def _checked_rle(seg: Any, video: Video, where: str) -> dict[str, Any]:
    """A GT frame as an RLE the official ``annToRLE`` would build (uncompressed ones are compressed later, in bulk),
    after checking that it decodes to a mask of its size (a corrupt one would make pycocotools loop forever)."""
    if isinstance(seg, list):
        return rle_utils.from_polygons(seg, video.height, video.width)
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise ValueError(f"{where}: expected an RLE {{'size': [h, w], 'counts': ...}} or polygons, got {seg!r:.200}")
    size = seg["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        raise ValueError(f"{where}: RLE 'size' must be [height, width], got {size!r:.100}")
    counts = seg["counts"]
    if isinstance(counts, list):
        try:
            total, smallest = sum(counts), min(counts, default=0)
        except TypeError:
            total, smallest = -1, -1
        if smallest >= 0 and total == size[0] * size[1] and all(type(c) is int for c in counts[:3]):
            return {"size": list(size), "counts": counts}
        reason = rle_utils.check_runs(counts, size) if total >= 0 else "run lengths must be integers"
    elif isinstance(counts, (str, bytes)):
        try:
            reason = rle_utils.check_runs(rle_utils.decode_counts(counts), size)
        except ValueError as err:
            reason = str(err)
        if reason is None:
            return {"size": list(size), "counts": counts}
    else:
        reason = f"'counts' must be a list of ints or a compressed string, got {type(counts).__name__}"
    raise ValueError(f"{where}: RLE cannot be decoded: {reason}")


def _frame_table(tracks: list[GtTrack]) -> FrameTable:
    """The masks of all tracks in one table (track ``k`` is owner ``k``), with areas."""
    for index, track in enumerate(tracks):
        track.index = index
    table = build_table(
        [[(int(s["size"][0]), int(s["size"][1]), s["counts"]) if s else None for s in t.segs] for t in tracks]
    )
    bad = table.compute_areas()
    assert bad is None, f"GT frame {bad} passed the RLE checks but does not decode: {table.invalid_reason(bad)}"
    return table
