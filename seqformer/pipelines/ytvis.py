"""YouTube-VIS 2019 / 2021 reader: schema validation of the instances JSON and per-video descriptors.

Layout: ``<root>/JPEGImages/<video>/<frame>.jpg`` plus an instances JSON (``instances_train_sub.json``, ...) with
``videos`` (``id``, ``file_names``, ``height``, ``width``, ``length``), ``annotations`` (``video_id``,
``category_id``, per-frame ``segmentations`` (RLE or polygons, ``null`` where absent), ``bboxes`` ``[x, y, w, h]``
(``null`` where absent), ``areas``) and ``categories`` (``id``, ``name``).

Structural errors in the JSON fail fast (:class:`AnnotationSchemaError` naming the field path, e.g.
``annotations[3].segmentations[2]``). Problems that concern one video only (unknown category, frame counts that
disagree, annotations of a video that is not listed, no frames) are reported as skips and the rest is processed.
A *descriptor* is the JSON-serialisable description of one video that the record builder consumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class AnnotationSchemaError(ValueError):
    """The annotation JSON does not have the YouTube-VIS / COCO structure; the message names the field path."""


def _type_name(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _fail(source: str, path: str, expected: str, value: Any) -> None:
    raise AnnotationSchemaError(
        f"{source}: {path}: expected {expected}, got {_type_name(value)}; fix the annotation file "
        "(YouTube-VIS / COCO instances format)"
    )


def _check_int(source: str, path: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(source, path, "an integer", value)


def _check_list(source: str, path: str, value: Any) -> None:
    if not isinstance(value, list):
        _fail(source, path, "a list", value)


def check_segmentation(source: str, path: str, value: Any) -> None:
    """Fail unless ``value`` is an RLE dict, a polygon list or ``None``."""
    if value is None:
        return
    if isinstance(value, dict):
        size, counts = value.get("size"), value.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
            _fail(source, f"{path}.size", "[height, width] integers", size)
        if not isinstance(counts, (str, list)):
            _fail(source, f"{path}.counts", "an RLE counts string or list of ints", counts)
        return
    if isinstance(value, list):
        for j, polygon in enumerate(value):
            if not isinstance(polygon, list) or not all(isinstance(c, (int, float)) for c in polygon):
                _fail(source, f"{path}[{j}]", "a polygon (list of numbers)", polygon)
        return
    _fail(source, path, "RLE dict, polygon list or null", value)


def _check_box(source: str, path: str, value: Any) -> None:
    if value is None:
        return
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(c, (int, float)) for c in value)):
        _fail(source, path, "[x, y, w, h] numbers or null", value)


def validate_ytvis(data: Any, source: str) -> None:
    """Check the structure of a YouTube-VIS instances JSON.

    Raises:
        AnnotationSchemaError: naming the first bad field's path, the value and what was expected.
    """
    if not isinstance(data, dict):
        _fail(source, "<top level>", "a JSON object with 'videos' and 'categories'", type(data).__name__)
    for key in ("videos", "categories"):
        if key not in data:
            raise AnnotationSchemaError(f"{source}: missing top-level key '{key}' (YouTube-VIS instances format)")
        _check_list(source, key, data[key])
    for i, category in enumerate(data["categories"]):
        if not isinstance(category, dict):
            _fail(source, f"categories[{i}]", "an object", category)
        _check_int(source, f"categories[{i}].id", category.get("id"))
    for i, video in enumerate(data["videos"]):
        if not isinstance(video, dict):
            _fail(source, f"videos[{i}]", "an object", video)
        for key in ("id", "height", "width"):
            _check_int(source, f"videos[{i}].{key}", video.get(key))
        _check_list(source, f"videos[{i}].file_names", video.get("file_names"))
        for j, name in enumerate(video["file_names"]):
            if not isinstance(name, str):
                _fail(source, f"videos[{i}].file_names[{j}]", "a string", name)
        if "length" in video:
            _check_int(source, f"videos[{i}].length", video["length"])
    annotations = data.get("annotations", [])
    _check_list(source, "annotations", annotations)
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            _fail(source, f"annotations[{i}]", "an object", ann)
        for key in ("video_id", "category_id"):
            _check_int(source, f"annotations[{i}].{key}", ann.get(key))
        _check_list(source, f"annotations[{i}].segmentations", ann.get("segmentations"))
        for j, seg in enumerate(ann["segmentations"]):
            check_segmentation(source, f"annotations[{i}].segmentations[{j}]", seg)
        if ann.get("bboxes") is not None:
            _check_list(source, f"annotations[{i}].bboxes", ann["bboxes"])
            for j, box in enumerate(ann["bboxes"]):
                _check_box(source, f"annotations[{i}].bboxes[{j}]", box)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_json(path: str | Path) -> Any:
    """Read an annotation JSON file with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise AnnotationSchemaError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None


def frame_dir(root: str | Path) -> Path:
    """Folder that ``file_names`` are relative to: ``root/JPEGImages`` when it exists, else ``root`` itself.

    Absolute, because descriptors travel to Ray workers whose working directory differs from the driver's.
    """
    root = Path(root).resolve()
    return root / "JPEGImages" if (root / "JPEGImages").is_dir() else root


def video_descriptors(
    data: dict[str, Any], root: str | Path, *, dataset: str = "ytvis"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split a validated YouTube-VIS JSON into per-video descriptors and up-front skips.

    Args:
        data: the instances JSON (already passed :func:`validate_ytvis`).
        root: dataset root (frames under ``root/JPEGImages/<file_name>``).
        dataset: tag stored in every record.

    Returns:
        ``(descriptors, skipped)``. A descriptor is a JSON-serialisable dict with ``dataset``, ``video_id``,
        ``name``, ``file_names``, ``frame_paths``, ``height``, ``width``, ``instances`` (each ``id``,
        ``category_id``, ``iscrowd``, ``segmentations``, ``bboxes``) and ``problem`` (a skip reason found from the
        JSON alone, or ``None``). ``skipped`` holds ``{video_id, reason}`` for annotations whose video is not listed.
    """
    base = frame_dir(root)
    category_ids = {c["id"] for c in data["categories"]}
    by_video: dict[int, list[dict[str, Any]]] = {}
    for ann in data.get("annotations", []):
        by_video.setdefault(ann["video_id"], []).append(ann)
    listed = {v["id"] for v in data["videos"]}
    skipped = [
        {
            "dataset": dataset,
            "video_id": vid,
            "reason": f"{len(anns)} annotation(s) point at video id {vid}, which is not in 'videos'",
        }
        for vid, anns in sorted(by_video.items())
        if vid not in listed
    ]
    descriptors = []
    for video in data["videos"]:
        anns = by_video.get(video["id"], [])
        descriptors.append(_descriptor(video, anns, base, category_ids, dataset))
    return descriptors, skipped


def _descriptor(
    video: dict[str, Any], anns: list[dict[str, Any]], base: Path, category_ids: set[int], dataset: str
) -> dict[str, Any]:
    file_names = list(video["file_names"])
    num = len(file_names)
    instances = [
        {
            "id": int(a.get("id", k)),
            "category_id": int(a["category_id"]),
            "iscrowd": int(a.get("iscrowd", 0) or 0),
            "segmentations": a["segmentations"],
            "bboxes": a.get("bboxes") or [None] * len(a["segmentations"]),
        }
        for k, a in enumerate(anns)
    ]
    return {
        "dataset": dataset,
        "video_id": int(video["id"]),
        "name": file_names[0].split("/")[0] if file_names else str(video["id"]),
        "file_names": file_names,
        "frame_paths": [str(base / f) for f in file_names],
        "height": int(video["height"]),
        "width": int(video["width"]),
        "instances": instances,
        "problem": _json_problem(video, instances, num, category_ids),
    }


def unsafe_relative_path(name: str) -> str | None:
    """Why ``name`` may not be joined to a dataset root (absolute, ``..``, NUL, backslash), or None when it is safe."""
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "leaves the dataset root through '..'"
    return None


def _json_problem(
    video: dict[str, Any], instances: list[dict[str, Any]], num: int, category_ids: set[int]
) -> str | None:
    """A reason to skip the video that the JSON alone reveals, or None."""
    if num == 0:
        return "empty video: 'file_names' is empty"
    for name in video["file_names"]:
        unsafe = unsafe_relative_path(name)
        if unsafe:
            return f"unsafe file name {name!r}: {unsafe}; frames must lie under the dataset's JPEGImages folder"
    if "length" in video and video["length"] != num:
        return f"frame count disagrees: length={video['length']} but {num} file_names"
    for inst in instances:
        if inst["category_id"] not in category_ids:
            return f"unknown category id {inst['category_id']} in annotation {inst['id']}"
        if len(inst["segmentations"]) != num or len(inst["bboxes"]) != num:
            return (
                f"frame count disagrees: annotation {inst['id']} has {len(inst['segmentations'])} segmentations "
                f"and {len(inst['bboxes'])} bboxes for {num} frames"
            )
    return None


def load_ytvis(
    annotations: str | Path, root: str | Path, *, dataset: str = "ytvis"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Read and validate a YouTube-VIS instances JSON.

    Returns:
        ``(descriptors, skipped, categories)``; see :func:`video_descriptors`. ``categories`` is the JSON's list of
        ``{id, name}``.

    Raises:
        FileNotFoundError: the JSON is missing.
        AnnotationSchemaError: the JSON is malformed (names the field path).
    """
    data = load_json(annotations)
    validate_ytvis(data, str(annotations))
    descriptors, skipped = video_descriptors(data, root, dataset=dataset)
    categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in data["categories"]]
    logger.info(
        "%s: %d videos, %d annotations, %d categories",
        annotations,
        len(descriptors),
        len(data.get("annotations", [])),
        len(categories),
    )
    return descriptors, skipped, categories


def iter_frame_stats(descriptor: dict[str, Any]) -> Iterator[list[int] | None]:
    """``[size, mtime_ns]`` of every frame file of a descriptor (``None`` for a missing or unusable file name)."""
    for path in descriptor["frame_paths"]:
        try:
            st = Path(path).stat()
        except (OSError, ValueError):  # ValueError: a NUL byte in the name (the video is skipped for it)
            yield None
        else:
            yield [st.st_size, st.st_mtime_ns]
