"""COCO 2017 reader for joint training: images become one-frame descriptors, categories mapped to YouTube-VIS.

The official joint training keeps only the COCO classes that overlap YouTube-VIS 2019 and remaps their ids
(:data:`COCO_TO_YTVIS19`); images keep 1–25 of those instances. Each kept image becomes a one-frame record with
``dataset="coco"``; the five-frame pseudo clip (original + four randomly warped copies) is made at training time by
``transforms.coco_pseudo_clip`` so that every epoch sees fresh warps.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seqformer.pipelines.ytvis import (
    AnnotationSchemaError,
    _check_box,
    _check_int,
    _check_list,
    check_segmentation,
    load_json,
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


def validate_coco(data: Any, source: str) -> None:
    """Check the structure of a COCO instances JSON; raises :class:`AnnotationSchemaError` naming the field path."""
    if not isinstance(data, dict):
        raise AnnotationSchemaError(f"{source}: <top level>: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise AnnotationSchemaError(f"{source}: missing top-level key '{key}' (COCO instances format)")
        _check_list(source, key, data[key])
    for i, image in enumerate(data["images"]):
        for key in ("id", "height", "width"):
            _check_int(source, f"images[{i}].{key}", image.get(key) if isinstance(image, dict) else image)
        if not isinstance(image.get("file_name"), str):
            raise AnnotationSchemaError(
                f"{source}: images[{i}].file_name: expected a string, got {image.get('file_name')!r}"
            )
    for i, ann in enumerate(data["annotations"]):
        for key in ("image_id", "category_id"):
            _check_int(source, f"annotations[{i}].{key}", ann.get(key) if isinstance(ann, dict) else ann)
        check_segmentation(source, f"annotations[{i}].segmentation", ann.get("segmentation"))
        _check_box(source, f"annotations[{i}].bbox", ann.get("bbox"))


def resolve_category_map(category_map: str | dict[int, int], coco_categories: list[dict[str, Any]]) -> dict[int, int]:
    """``"ytvis19"`` → :data:`COCO_TO_YTVIS19`; ``"identity"`` → keep every category; a dict is used as given."""
    if isinstance(category_map, dict):
        return {int(k): int(v) for k, v in category_map.items()}
    if category_map == "ytvis19":
        return dict(COCO_TO_YTVIS19)
    if category_map == "identity":
        return {int(c["id"]): int(c["id"]) for c in coco_categories}
    raise ValueError(f"category_map must be 'ytvis19', 'identity' or a dict, got {category_map!r}")


def load_coco(
    annotations: str | Path, image_root: str | Path, *, category_map: str | dict[int, int] = "ytvis19"
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read COCO instances and return one-frame descriptors (same shape as YouTube-VIS ones) and filter counts.

    Crowd annotations and annotations of unmapped categories are dropped; images left with no instance, or with
    more than :data:`MAX_INSTANCES`, are filtered out (counted per reason; this is selection, not bad input).

    Returns:
        ``(descriptors, filtered)``; descriptors have ``dataset="coco"`` and ``video_id`` = the image id.
    """
    data = load_json(annotations)
    validate_coco(data, str(annotations))
    mapping = resolve_category_map(category_map, data["categories"])
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or ann["category_id"] not in mapping or ann.get("segmentation") is None:
            continue
        by_image.setdefault(ann["image_id"], []).append(ann)
    root = Path(image_root).resolve()  # absolute: descriptors travel to Ray workers
    descriptors: list[dict[str, Any]] = []
    filtered: dict[str, int] = {}
    for image in data["images"]:
        anns = by_image.get(image["id"], [])
        if not anns or len(anns) > MAX_INSTANCES:
            reason = "no instance of a kept category" if not anns else f"more than {MAX_INSTANCES} instances"
            filtered[reason] = filtered.get(reason, 0) + 1
            continue
        descriptors.append(
            {
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
                "problem": (
                    f"unsafe file name {image['file_name']!r}: {unsafe_relative_path(image['file_name'])}"
                    if unsafe_relative_path(image["file_name"])
                    else None
                ),
            }
        )
    logger.info("%s: %d images kept as pseudo-clip sources, filtered: %s", annotations, len(descriptors), filtered)
    return descriptors, filtered
