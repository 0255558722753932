"""COCO 2017 reader for joint training: images become one-frame descriptors, categories mapped to YouTube-VIS.

The official joint training keeps only the COCO classes that overlap YouTube-VIS 2019 and remaps their ids
(:data:`COCO_TO_YTVIS19`); images keep 1–25 of those instances. Each kept image becomes a one-frame record with
``dataset="coco"``; the five-frame pseudo clip (original + four randomly warped copies) is made at training time by
``transforms.coco_pseudo_clip`` so that every epoch sees fresh warps.
"""

from __future__ import annotations

import json
import logging
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqformer.pipelines.ytvis import (
    AnnotationSchemaError,
    _check_box,
    _check_int,
    _check_list,
    check_segmentation,
    descriptor_from_spill,
    read_bytes_range,
    scan_json_object,
    spill_line,
    unsafe_relative_path,
)

logger = logging.getLogger(__name__)

COCO_TO_YTVIS19: dict[int, int] = {
    1: 1, 2: 21, 3: 6, 4: 21, 5: 28, 7: 17, 8: 29, 9: 34, 17: 14, 18: 8, 19: 18, 21: 15, 22: 32, 23: 20, 24: 30,
    25: 22, 36: 33, 41: 5, 42: 27, 43: 40, 74: 24,
}  # fmt: skip
"""COCO category id → YouTube-VIS 2019 category id (official ``coco_keepfor_ytvis19.json``); others are dropped."""

MAX_INSTANCES = 25
"""Images with more kept instances are skipped (the official pseudo-clip dataset requires 1–25)."""


def _validate_image(source: str, i: int, image: Any) -> None:
    for key in ("id", "height", "width"):
        _check_int(source, f"images[{i}].{key}", image.get(key) if isinstance(image, dict) else image)
    if not isinstance(image.get("file_name"), str):
        raise AnnotationSchemaError(
            f"{source}: images[{i}].file_name: expected a string, got {image.get('file_name')!r}"
        )


def _validate_annotation(source: str, i: int, ann: Any) -> None:
    for key in ("image_id", "category_id"):
        _check_int(source, f"annotations[{i}].{key}", ann.get(key) if isinstance(ann, dict) else ann)
    check_segmentation(source, f"annotations[{i}].segmentation", ann.get("segmentation"))
    _check_box(source, f"annotations[{i}].bbox", ann.get("bbox"))


def validate_coco(data: Any, source: str) -> None:
    """Check the structure of a COCO instances JSON; raises :class:`AnnotationSchemaError` naming the field path."""
    if not isinstance(data, dict):
        raise AnnotationSchemaError(f"{source}: <top level>: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationSchemaError(f"{source}: missing top-level key '{key}' (COCO instances format)")
        _check_list(source, key, data[key])
    for i, image in enumerate(data["images"]):
        _validate_image(source, i, image)
    for i, ann in enumerate(data["annotations"]):
        _validate_annotation(source, i, ann)


def resolve_category_map(category_map: str | dict[int, int], coco_categories: list[dict[str, Any]]) -> dict[int, int]:
    """``"ytvis19"`` → :data:`COCO_TO_YTVIS19`; ``"identity"`` → keep every category; a dict is used as given."""
    if isinstance(category_map, dict):
        return {int(k): int(v) for k, v in category_map.items()}
    if category_map == "ytvis19":
        return dict(COCO_TO_YTVIS19)
    if category_map == "identity":
        return {int(c["id"]): int(c["id"]) for c in coco_categories}
    raise ValueError(f"category_map must be 'ytvis19', 'identity' or a dict, got {category_map!r}")


@dataclass
class CocoIndex:
    """A validated COCO instances JSON as a compact per-image index into the file (see ``ytvis.YtvisIndex``).

    Per image: its byte range; per image with usable annotations (not crowd, with a segmentation): the byte range and
    category id of each. :meth:`iter_descriptors` applies the category map and the 1..:data:`MAX_INSTANCES` rule.
    """

    path: Path
    root: Path
    mapping: dict[int, int]
    image_ranges: array = field(default_factory=lambda: array("q"))
    image_ids: list[int] = field(default_factory=list)
    annotations: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, annotations: str | Path, image_root: str | Path, *, category_map: str | dict[int, int] = "ytvis19"
    ) -> CocoIndex:
        """Stream-validate the JSON and index it.

        Raises:
            FileNotFoundError: the JSON is missing.
            AnnotationSchemaError: the JSON is malformed (names the field path).
        """
        source = str(annotations)
        index = cls(Path(annotations), Path(image_root).resolve(), {})  # absolute: descriptors travel to workers

        def on_image(i: int, image: Any, start: int, stop: int) -> None:
            _validate_image(source, i, image)
            index.image_ids.append(image["id"])
            index.image_ranges.extend((start, stop))

        def on_annotation(i: int, ann: Any, start: int, stop: int) -> None:
            _validate_annotation(source, i, ann)
            if not ann.get("iscrowd", 0) and ann.get("segmentation") is not None:
                index.annotations.setdefault(ann["image_id"], []).append((start, stop, ann["category_id"]))

        others, seen = scan_json_object(annotations, {"images": on_image, "annotations": on_annotation})
        if "__fallback__" in others:
            validate_coco(others["__fallback__"], source)
            raise AnnotationSchemaError(f"{source}: could not be read as a stream of COCO elements")
        for key in seen:
            others[key] = []
        validate_coco(others, source)
        index.mapping = resolve_category_map(category_map, others["categories"])
        return index

    def _kept(self, image_id: int) -> list[tuple[int, int, int]]:
        return [a for a in self.annotations.get(image_id, ()) if a[2] in self.mapping]

    def filtered(self) -> dict[str, int]:
        """Images left out, counted per reason (selection, not bad input)."""
        counts: dict[str, int] = {}
        for image_id in self.image_ids:
            kept = len(self._kept(image_id))
            if not kept or kept > MAX_INSTANCES:
                reason = "no instance of a kept category" if not kept else f"more than {MAX_INSTANCES} instances"
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def context(self) -> dict[str, Any]:
        """What ``ytvis.descriptor_from_spill`` needs besides a spilled line."""
        return {"dataset": "coco", "root": str(self.root), "mapping": {str(k): v for k, v in self.mapping.items()}}

    def iter_spill(self) -> Iterator[tuple[list[str], bytes]]:
        """Per kept image in file order: ``([file_name], line)`` (see ``ytvis.YtvisIndex.iter_spill``)."""
        with open(self.path, "rb") as handle:
            for k, image_id in enumerate(self.image_ids):
                kept = self._kept(image_id)
                if not kept or len(kept) > MAX_INSTANCES:
                    continue
                raw_image = read_bytes_range(handle, self.image_ranges[2 * k], self.image_ranges[2 * k + 1])
                raw_anns = [read_bytes_range(handle, start, stop) for start, stop, _ in kept]
                yield [json.loads(raw_image)["file_name"]], spill_line(raw_image, raw_anns)

    def iter_descriptors(self) -> Iterator[dict[str, Any]]:
        """One-frame descriptors of the kept images in file order, one image read at a time."""
        context = self.context()
        for _, line in self.iter_spill():
            yield descriptor_from_spill(line, context)


def coco_descriptor(image: dict[str, Any], anns: list[dict[str, Any]], root: Path, mapping: dict[int, int]) -> dict:
    """The one-frame descriptor of a COCO image with its kept annotations."""
    unsafe = unsafe_relative_path(image["file_name"])
    return {
        "dataset": "coco",
        "video_id": int(image["id"]),
        "name": Path(image["file_name"]).stem,
        "file_names": [image["file_name"]],
        "frame_paths": [str(root / image["file_name"])],
        "height": int(image["height"]),
        "width": int(image["width"]),
        "instances": [
            {
                "id": int(a.get("id", k)),
                "category_id": mapping[a["category_id"]],
                "iscrowd": 0,
                "segmentations": [a["segmentation"]],
                "bboxes": [a.get("bbox")],
            }
            for k, a in enumerate(anns)
        ],
        "problem": f"unsafe file name {image['file_name']!r}: {unsafe}" if unsafe else None,
    }


def load_coco(
    annotations: str | Path, image_root: str | Path, *, category_map: str | dict[int, int] = "ytvis19"
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read COCO instances and return one-frame descriptors (same shape as YouTube-VIS ones) and filter counts.

    Crowd annotations and annotations of unmapped categories are dropped; images left with no instance, or with
    more than :data:`MAX_INSTANCES`, are filtered out (counted per reason; this is selection, not bad input).
    ``prepare`` streams :class:`CocoIndex` instead of holding the list.

    Returns:
        ``(descriptors, filtered)``; descriptors have ``dataset="coco"`` and ``video_id`` = the image id.
    """
    index = CocoIndex.build(annotations, image_root, category_map=category_map)
    descriptors = list(index.iter_descriptors())
    filtered = index.filtered()
    logger.info("%s: %d images kept as pseudo-clip sources, filtered: %s", annotations, len(descriptors), filtered)
    return descriptors, filtered
