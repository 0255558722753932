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
from seqformer.pipelines.evaluation._extension import load
from seqformer.pipelines.evaluation.frames import FrameTable, build_table
from seqformer.pipelines.evaluation.io import PathLike, Problems, load_json, read_writable

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
        segs: per frame a compressed RLE dict or None (absent), only while the general path parses the track; the
            masks live in :attr:`GroundTruth.frames`.
        odd_sizes: frame -> (h, w) for frames whose mask size differs from the video's.
        index: the track's owner index in :attr:`GroundTruth.frames`.
    """

    ann_id: Any
    crowd: bool
    ignore: bool
    avg_area: float
    segs: list[dict[str, Any] | None] | None = None
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


def read_ground_truth_file(path: PathLike, problems: Problems | None = None, source: str | None = None) -> GroundTruth:
    """Read, validate and index a YouTube-VIS annotation ``.json`` / ``.json.gz`` file.

    The compiled reader parses the file and puts the masks straight into the frame table; a file it does not take
    (non-ASCII text, polygons, malformed masks, ...) is parsed as JSON and goes through :func:`parse_ground_truth`,
    with the same result and the same messages.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON or cannot be scored.
    """
    source = source or str(path)
    parsed = load().read_ground_truth(read_writable(path, "ground-truth file"))
    if isinstance(parsed, str):
        logger.info("%s: read with the general JSON parser (%s)", source, parsed)
        return parse_ground_truth(load_json(path, "ground-truth file"), problems, source)
    table = FrameTable(parsed[1], *(np.frombuffer(b, dtype=np.int64).copy() for b in parsed[2:]))
    return parse_ground_truth(parsed[0], problems, source, frames=table)


def parse_ground_truth(
    data: Any, problems: Problems | None = None, source: str = "ground truth", *, frames: FrameTable | None = None
) -> GroundTruth:
    """Validate and index a YouTube-VIS annotation dict.

    Args:
        data: the parsed JSON (``videos``, ``categories``, ``annotations``).
        problems: where to report malformed entries the official evaluator accepts (default: a new lenient one).
        source: how messages name the input (e.g. the file path).
        frames: the masks already in a table whose owner ``k`` is ``data["annotations"][k]`` (from
            :func:`read_ground_truth_file`, whose ``segmentations`` lists then only mark absent frames with None);
            by default they are read from the ``segmentations`` lists.

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
    kept_anns: list[dict[str, Any]] = []  # each kept annotation once, in official order
    slot: dict[int, int] = {}
    placed: list[tuple[tuple[Any, Any], int]] = []
    video_ids = sorted(videos)
    for video_id in video_ids:
        for ann in by_video.get(video_id, []):
            if ann["category_id"] not in category_names:
                continue
            kept = by_id[ann["id"]]  # the official index holds one annotation per id: the last one
            if id(kept) not in slot:
                slot[id(kept)] = len(kept_anns)
                kept_anns.append(kept)
            placed.append(((kept["video_id"], kept["category_id"]), slot[id(kept)]))
    indices = [index_of[id(a)] for a in kept_anns]
    parsed, frames = _parse_tracks(kept_anns, indices, videos, problems, source, frames)
    tracks: dict[tuple[Any, Any], list[GtTrack]] = defaultdict(list)
    for key, position in placed:
        tracks[key].append(parsed[position])
    return GroundTruth(videos, video_ids, category_ids, category_names, dict(tracks), problems.messages, frames)


def _parse_tracks(
    anns: list[dict[str, Any]],
    indices: list[int],
    videos: dict[Any, Video],
    problems: Problems,
    source: str,
    table: FrameTable | None,
) -> tuple[list[GtTrack], FrameTable]:
    """The tracks of the kept annotations with their frame table, warnings in track order.

    With ``table`` (every annotation of the file, owner = annotation index) the tracks point into it. Otherwise the
    common shapes (null frames, RLEs with uncompressed int counts or compressed strings) are read and compressed by
    one compiled call (owner = position in ``anns``); annotations holding any other shape (polygons, bad values) go
    through :func:`_parse_track`, which also words the errors.
    """
    owners = indices
    if table is None:
        encoded = load().encode_tracks([ann["segmentations"] for ann in anns])
        if isinstance(encoded, int):
            parsed = [_parse_track(ann, index, videos, problems, source) for ann, index in zip(anns, indices)]
            return parsed, _frame_table(parsed)
        table = FrameTable(encoded[0], *(np.frombuffer(b, dtype=np.int64).copy() for b in encoded[1:]))
        owners = list(range(len(anns)))
    parsed = []
    for owner, ann, index in zip(owners, anns, indices):
        track, where, video = _track_header(ann, index, videos, problems, source)
        first, last = int(table.offsets[owner]), int(table.offsets[owner + 1])
        height, width = table.height[first:last], table.width[first:last]
        odd = np.flatnonzero((table.start[first:last] >= 0) & ((height != video.height) | (width != video.width)))
        if odd.size:
            track.odd_sizes = {int(f): (int(height[f]), int(width[f])) for f in odd}
            _warn_odd_sizes(track, where, video, problems)
        track.index = owner
        parsed.append(track)
    return parsed, table


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


def _track_header(
    ann: dict[str, Any], index: int, videos: dict[Any, Video], problems: Problems, source: str
) -> tuple[GtTrack, str, Video]:
    """A track without its frames (warnings about iscrowd, id 0 and the frame count; the mean of ``areas``)."""
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
    return GtTrack(ann["id"], bool(int(iscrowd)), bool(iscrowd), avg_area), where, video


def _warn_odd_sizes(track: GtTrack, where: str, video: Video, problems: Problems) -> None:
    if track.odd_sizes:
        problems.warn(
            f"{where} has masks of size {sorted(set(track.odd_sizes.values()))} in a "
            f"{video.height}x{video.width} video (frames {sorted(track.odd_sizes)[:10]})"
        )


def _parse_track(ann: dict[str, Any], index: int, videos: dict[Any, Video], problems: Problems, source: str) -> GtTrack:
    """One track by the general path: every frame checked (and polygons rasterised) in Python."""
    track, where, video = _track_header(ann, index, videos, problems, source)
    segs: list[dict[str, Any] | None] = []
    uncompressed: list[int] = []
    for frame, seg in enumerate(ann["segmentations"]):
        segs.append(_checked_rle(seg, video, f"{where} frame {frame}") if seg else None)
        if seg and isinstance(segs[-1]["counts"], list):
            uncompressed.append(frame)
        size = (int(segs[-1]["size"][0]), int(segs[-1]["size"][1])) if seg else None
        if size is not None and size != (video.height, video.width):
            track.odd_sizes[frame] = size
    if uncompressed:  # one C call for all of the track's uncompressed frames, as the official frPyObjects does
        encoded = coco_mask.frUncompressedRLE([segs[f] for f in uncompressed], video.height, video.width)
        for frame, rle in zip(uncompressed, encoded):
            segs[frame] = {"size": segs[frame]["size"], "counts": rle["counts"]}
    track.segs = segs
    _warn_odd_sizes(track, where, video, problems)
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
        reason = (rle_utils.check_runs(counts, size) if total >= 0 else None) or "run lengths must be integers"
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
    """The masks of tracks parsed by :func:`_parse_track` in one table (track ``k`` is owner ``k``), with areas."""
    for index, track in enumerate(tracks):
        track.index = index
    table = build_table(
        [[(int(s["size"][0]), int(s["size"][1]), s["counts"]) if s else None for s in t.segs] for t in tracks]
    )
    bad = table.compute_areas()
    assert bad is None, f"GT frame {bad} passed the RLE checks but does not decode: {table.invalid_reason(bad)}"
    for track in tracks:
        track.segs = None  # the table holds the masks now
    return table
