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

import codecs
import hashlib
import json
import logging
import re
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

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


def validate_category(source: str, i: int, category: Any) -> None:
    """Check ``categories[i]``."""
    if not isinstance(category, dict):
        _fail(source, f"categories[{i}]", "an object", category)
    _check_int(source, f"categories[{i}].id", category.get("id"))


def validate_video(source: str, i: int, video: Any) -> None:
    """Check ``videos[i]``."""
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


def validate_annotation(source: str, i: int, ann: Any) -> None:
    """Check ``annotations[i]`` of a YouTube-VIS file."""
    if not isinstance(ann, dict):
        _fail(source, f"annotations[{i}]", "an object", ann)
    for key in ("video_id", "category_id"):
        _check_int(source, f"annotations[{i}].{key}", ann.get(key))
    _check_list(source, f"annotations[{i}].segmentations", ann.get("segmentations"))
    for j, seg in enumerate(ann["segmentations"]):
        if not _plain_rle(seg):  # the common cases are checked inline; the full check names what is wrong
            check_segmentation(source, f"annotations[{i}].segmentations[{j}]", seg)
    if ann.get("bboxes") is not None:
        _check_list(source, f"annotations[{i}].bboxes", ann["bboxes"])
        for j, box in enumerate(ann["bboxes"]):
            if box is not None and not (
                type(box) is list and len(box) == 4 and all(type(c) is int or type(c) is float for c in box)
            ):
                _check_box(source, f"annotations[{i}].bboxes[{j}]", box)


def _plain_rle(seg: Any) -> bool:
    """``None`` or a well-formed RLE dict (fast path of :func:`check_segmentation`)."""
    if seg is None:
        return True
    if type(seg) is not dict:
        return False
    size, counts = seg.get("size"), seg.get("counts")
    return (
        type(size) is list
        and len(size) == 2
        and type(size[0]) is int
        and type(size[1]) is int
        and (type(counts) is str or type(counts) is list)
    )


def _check_top_level(data: Any, source: str, keys: tuple[str, ...], fmt: str) -> None:
    if not isinstance(data, dict):
        _fail(source, "<top level>", f"a JSON object with {', '.join(repr(k) for k in keys)}", type(data).__name__)
    for key in keys:
        if key not in data:
            raise AnnotationSchemaError(f"{source}: missing top-level key '{key}' ({fmt} instances format)")
        _check_list(source, key, data[key])


def validate_ytvis(data: Any, source: str) -> None:
    """Check the structure of a (fully loaded) YouTube-VIS instances JSON.

    Raises:
        AnnotationSchemaError: naming the first bad field's path, the value and what was expected.
    """
    _check_top_level(data, source, ("videos", "categories"), "YouTube-VIS")
    for i, category in enumerate(data["categories"]):
        validate_category(source, i, category)
    for i, video in enumerate(data["videos"]):
        validate_video(source, i, video)
    annotations = data.get("annotations", [])
    _check_list(source, "annotations", annotations)
    for i, ann in enumerate(annotations):
        validate_annotation(source, i, ann)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
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


class _StreamFallback(Exception):
    """The streaming reader met something it does not handle (invalid JSON, a top level that is not an object)."""


_WHITESPACE = re.compile(r"[ \t\n\r]*")


READ_CHUNK = 1 << 20
"""Bytes the streaming JSON reader reads at a time (its text window is about this plus the largest element)."""


class _JsonReader:
    """Incremental reader over a UTF-8 JSON file: a text window plus the byte offset of its first character."""

    def __init__(self, handle: BinaryIO, chunk: int | None = None) -> None:
        self.handle, self.chunk = handle, chunk or READ_CHUNK
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text, self.pos, self.base, self.eof = "", 0, 0, False
        self.decoder_json = json.JSONDecoder()

    def _more(self, at_least: int) -> bool:
        """Drop the consumed text and read at least ``at_least`` more bytes; False at the end of the file."""
        if self.eof:
            return False
        consumed = self.text[: self.pos]
        self.base += len(consumed) if consumed.isascii() else len(consumed.encode("utf-8"))
        data = self.handle.read(max(self.chunk, at_least))
        self.text = self.text[self.pos :] + self.decoder.decode(data, final=not data)
        self.pos = 0
        self.eof = not data
        return True

    def byte_offset(self, pos: int) -> int:
        if self.text.isascii():  # O(1) in CPython (a flag of the string): no slice, no encode
            return self.base + pos
        return self.base + len(self.text[:pos].encode("utf-8"))

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end of the file); does not consume it."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more(0):
                return ""

    def expect(self, chars: str) -> str:
        char = self.peek()
        if not char or char not in chars:
            raise _StreamFallback(f"expected one of {chars!r} at byte {self.byte_offset(self.pos)}")
        self.pos += 1
        return char

    def value(self) -> tuple[Any, int, int]:
        """Decode the next JSON value; returns ``(value, start_byte, end_byte)``."""
        self.peek()
        want = self.chunk
        while True:
            try:
                value, end = self.decoder_json.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                end = -1
            if end != -1 and (self.eof or not _may_continue(value, self.text, end)):
                break
            if not self._more(want):
                if end != -1:
                    break
                raise _StreamFallback("invalid JSON value")
            want *= 2
        start, stop = self.byte_offset(self.pos), self.byte_offset(end)
        self.pos = end
        return value, start, stop


def _may_continue(value: Any, text: str, end: int) -> bool:
    """Whether a decoded number may be the cut-short prefix of a longer one (the text ran out around it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False  # objects, arrays, strings and literals end on a character of their own
    after = _WHITESPACE.match(text, end).end()
    return after == len(text) or text[after] in "0123456789.eE+-"


def scan_json_object(
    path: str | Path, streamed: dict[str, Callable[[int, Any, int, int], None]]
) -> tuple[dict[str, Any], set[str]]:
    """Read a top-level JSON object, streaming the elements of some array-valued keys one at a time.

    Memory stays bounded by the largest single element (plus the non-streamed values), not by the file size.

    Args:
        path: the JSON file.
        streamed: key → ``callback(index, element, start_byte, end_byte)`` called for every element of that key's
            array, in order; the byte range lets a caller read the element again later (:func:`read_json_range`).

    Returns:
        ``(others, seen)``: the decoded values of every other top-level key (a streamed key whose value is not an
        array lands here too), and the streamed keys that were present.

    Raises:
        FileNotFoundError: no such file.
        AnnotationSchemaError: the file is not valid JSON, or not an object at the top level (from
            :func:`load_json` and the caller's validator, which then see the whole file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    others: dict[str, Any] = {}
    seen: set[str] = set()
    with open(path, "rb") as handle:
        reader = _JsonReader(handle)
        try:
            reader.expect("{")
            if reader.peek() == "}":
                reader.pos += 1
            else:
                while True:
                    key, _, _ = reader.value()
                    if not isinstance(key, str):
                        raise _StreamFallback("object key is not a string")
                    reader.expect(":")
                    if key in streamed and reader.peek() == "[":
                        seen.add(key)
                        reader.pos += 1
                        if reader.peek() == "]":
                            reader.pos += 1
                        else:
                            index = 0
                            while True:
                                element, start, stop = reader.value()
                                streamed[key](index, element, start, stop)
                                index += 1
                                if reader.expect(",]") == "]":
                                    break
                    else:
                        others[key] = reader.value()[0]
                    if reader.expect(",}") == "}":
                        break
            if reader.peek() != "":
                raise _StreamFallback("extra data after the top-level object")
        except _StreamFallback:
            return {"__fallback__": load_json(path)}, set()
    return others, seen


def read_bytes_range(handle: BinaryIO, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of an open file."""
    handle.seek(start)
    return handle.read(stop - start)


def read_json_range(handle: BinaryIO, start: int, stop: int) -> Any:
    """Decode the JSON value stored at bytes ``[start, stop)`` of an open file."""
    return json.loads(read_bytes_range(handle, start, stop))


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


@dataclass
class YtvisIndex:
    """A validated YouTube-VIS instances JSON as a compact per-video index into the file.

    Built by one streaming pass (:meth:`build`) that validates every element; only byte ranges are kept (three
    integers per video and two per annotation), so the driver's memory does not grow with the annotations' size.
    :meth:`iter_descriptors` re-reads one video's elements at a time.
    """

    path: Path
    root: Path
    dataset: str
    categories: list[dict[str, Any]]
    video_ids: list[int] = field(default_factory=list)
    video_ranges: array = field(default_factory=lambda: array("q"))
    annotation_ranges: dict[int, array] = field(default_factory=dict)
    num_annotations: int = 0

    @classmethod
    def build(cls, annotations: str | Path, root: str | Path, *, dataset: str = "ytvis") -> YtvisIndex:
        """Stream-validate the JSON and index it.

        Raises:
            FileNotFoundError: the JSON is missing.
            AnnotationSchemaError: the JSON is malformed (names the field path).
        """
        source = str(annotations)
        index = cls(Path(annotations), frame_dir(root), dataset, [])

        def on_video(i: int, video: Any, start: int, stop: int) -> None:
            validate_video(source, i, video)
            index.video_ids.append(video["id"])
            index.video_ranges.extend((start, stop))

        def on_annotation(i: int, ann: Any, start: int, stop: int) -> None:
            validate_annotation(source, i, ann)
            index.annotation_ranges.setdefault(ann["video_id"], array("q")).extend((start, stop))
            index.num_annotations += 1

        others, seen = scan_json_object(annotations, {"videos": on_video, "annotations": on_annotation})
        if "__fallback__" in others:
            validate_ytvis(others["__fallback__"], source)
            raise AnnotationSchemaError(f"{source}: could not be read as a stream of YouTube-VIS elements")
        for key in seen:
            others[key] = []  # streamed and validated already; an empty list passes the top-level checks
        _check_top_level(others, source, ("videos", "categories"), "YouTube-VIS")
        if "annotations" in others:
            _check_list(source, "annotations", others["annotations"])
        for i, category in enumerate(others["categories"]):
            validate_category(source, i, category)
        index.categories = [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in others["categories"]]
        logger.info(
            "%s: %d videos, %d annotations, %d categories",
            annotations,
            len(index.video_ids),
            index.num_annotations,
            len(index.categories),
        )
        return index

    def __len__(self) -> int:
        return len(self.video_ids)

    def unlisted_skips(self) -> list[dict[str, Any]]:
        """``{dataset, video_id, reason}`` for annotations whose video is not in ``videos``."""
        listed = set(self.video_ids)
        return [
            {
                "dataset": self.dataset,
                "video_id": vid,
                "reason": f"{len(ranges) // 2} annotation(s) point at video id {vid}, which is not in 'videos'",
            }
            for vid, ranges in sorted(self.annotation_ranges.items())
            if vid not in listed
        ]

    def context(self) -> dict[str, Any]:
        """What :func:`descriptor_from_spill` needs besides a spilled line (small; travels with each window)."""
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "category_ids": sorted({c["id"] for c in self.categories}),
        }

    def iter_spill(self) -> Iterator[tuple[list[str], bytes]]:
        """Per video in the JSON's order: ``(file_names, line)``, one video read from the file at a time.

        ``line`` is ``{"video": ..., "annotations": [...]}`` assembled from the elements' original bytes (never
        re-encoded; one line), to be turned into a descriptor on a worker by :func:`descriptor_from_spill`.
        """
        with open(self.path, "rb") as handle:
            for k, vid in enumerate(self.video_ids):
                raw_video = read_bytes_range(handle, self.video_ranges[2 * k], self.video_ranges[2 * k + 1])
                file_names = json.loads(raw_video)["file_names"]
                ranges = self.annotation_ranges.get(vid, ())
                raw_anns = [read_bytes_range(handle, ranges[j], ranges[j + 1]) for j in range(0, len(ranges), 2)]
                yield file_names, spill_line(raw_video, raw_anns)

    def iter_descriptors(self) -> Iterator[dict[str, Any]]:
        """Per-video descriptors in the JSON's video order, one video read from the file at a time."""
        context = self.context()
        for _, line in self.iter_spill():
            yield descriptor_from_spill(line, context)


def spill_line(raw_item: bytes, raw_annotations: list[bytes]) -> bytes:
    """One JSON line ``{"video": item, "annotations": [...]}`` from the elements' original bytes.

    Newlines outside strings are JSON whitespace and JSON strings cannot hold raw newlines, so replacing them with
    spaces keeps the values exactly.
    """
    line = b'{"video":' + raw_item + b',"annotations":[' + b",".join(raw_annotations) + b"]}"
    return line.replace(b"\n", b" ").replace(b"\r", b" ")


def descriptor_from_spill(line: bytes, context: dict[str, Any]) -> dict[str, Any]:
    """The descriptor of one spilled video (YouTube-VIS or COCO, per ``context["dataset"]``)."""
    item = json.loads(line)
    if context["dataset"] == "coco":
        from seqformer.pipelines.coco import coco_descriptor

        mapping = {int(k): int(v) for k, v in context["mapping"].items()}
        return coco_descriptor(item["video"], item["annotations"], Path(context["root"]), mapping)
    return _descriptor(
        item["video"], item["annotations"], Path(context["root"]), set(context["category_ids"]), context["dataset"]
    )


def load_ytvis(
    annotations: str | Path, root: str | Path, *, dataset: str = "ytvis"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Read and validate a YouTube-VIS instances JSON into a list of every descriptor (small data, tests).

    ``prepare`` streams :class:`YtvisIndex` instead, which never holds more than one video.

    Returns:
        ``(descriptors, skipped, categories)``; see :func:`video_descriptors`. ``categories`` is the JSON's list of
        ``{id, name}``.

    Raises:
        FileNotFoundError: the JSON is missing.
        AnnotationSchemaError: the JSON is malformed (names the field path).
    """
    index = YtvisIndex.build(annotations, root, dataset=dataset)
    return list(index.iter_descriptors()), index.unlisted_skips(), index.categories


def iter_frame_stats(descriptor: dict[str, Any]) -> Iterator[list[int] | None]:
    """``[size, mtime_ns]`` of every frame file of a descriptor (``None`` for a missing or unusable file name)."""
    for path in descriptor["frame_paths"]:
        try:
            st = Path(path).stat()
        except (OSError, ValueError):  # ValueError: a NUL byte in the name (the video is skipped for it)
            yield None
        else:
            yield [st.st_size, st.st_mtime_ns]
