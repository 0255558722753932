"""COCO images become one-frame records and, at training time, five-frame pseudo clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqformer.pipelines.clip_records import iter_records, record_masks
from seqformer.pipelines.coco import COCO_TO_YTVIS19, load_coco
from seqformer.pipelines.collate import make_sample
from seqformer.pipelines.masks import mask_to_box, segmentation_to_mask
from seqformer.pipelines.prepare import PrepareOptions, Source, prepare
from seqformer.pipelines.synthetic import generate_coco, generate_ytvis
from seqformer.pipelines.transforms import AugmentationConfig, ClipAugmentation, sample_clip
from seqformer.pipelines.video_io import decode_image
from seqformer.pipelines.ytvis import AnnotationSchemaError


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    generate_coco(root, 4, 64, 64, seed=5)
    return root


def test_coco_pseudo_clip_record(coco_dir: Path, tmp_path: Path) -> None:
    annotations = coco_dir / "annotations" / "instances_train2017.json"
    manifest = prepare([Source("coco", str(annotations), str(coco_dir / "train2017"), "identity")], tmp_path / "out")
    data = json.loads(annotations.read_text())
    records = list(iter_records(tmp_path / "out"))
    assert manifest["records_by_dataset"] == {"coco": len(records)} and len(records) == len(data["images"])
    record = records[0]
    assert record["dataset"] == "coco" and len(record["frames"]) == 1
    anns = [a for a in data["annotations"] if a["image_id"] == record["video_id"]]
    masks = record_masks(record)
    for n, ann in enumerate(anns):
        np.testing.assert_array_equal(masks[n, 0], segmentation_to_mask(ann["segmentation"], 64, 64))
        assert record["instances"][n]["category_id"] == ann["category_id"]

    clip = sample_clip(record, 5, np.random.default_rng(0))
    assert len(clip.frames) == 5 and clip.masks.shape == (len(anns), 5, 64, 64)
    original = np.asarray(decode_image(record["frames"][0]))
    assert sum(np.array_equal(np.asarray(f), original) for f in clip.frames) == 1  # the original, shuffled in
    assert sum(np.array_equal(clip.masks[:, t], masks[:, 0]) for t in range(5)) >= 1
    for n in range(len(anns)):
        for t in range(5):
            np.testing.assert_array_equal(clip.boxes[n, t], mask_to_box(clip.masks[n, t]))  # boxes from masks
            assert clip.valid[n, t] == clip.masks[n, t].any()
    # the warped copies differ from each other (independent random transforms)
    assert len({np.asarray(f).tobytes() for f in clip.frames}) == 5

    cfg = AugmentationConfig(train_scales=(48, 64), max_train_size=96, crop_scales=(64,), crop_min=40, crop_max=64)
    sample = make_sample(record, num_frames=5, augmentation=ClipAugmentation(cfg), seed=0)
    assert sample is not None and sample[0].shape[:2] == (5, 3)


def test_ytvis19_category_map_keeps_only_overlapping_classes(coco_dir: Path, tmp_path: Path) -> None:
    data = json.loads((coco_dir / "annotations" / "instances_train2017.json").read_text())
    image = data["images"][0]
    seg = next(a for a in data["annotations"] if a["image_id"] == image["id"])["segmentation"]
    anns = [
        {"id": 1, "image_id": image["id"], "category_id": 3, "segmentation": seg, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        {"id": 2, "image_id": image["id"], "category_id": 10, "segmentation": seg, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        {"id": 3, "image_id": image["id"], "category_id": 1, "segmentation": seg, "bbox": [0, 0, 5, 5], "iscrowd": 1},
    ]
    categories = [{"id": i, "name": str(i)} for i in (1, 3, 10)]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": data["images"][:2], "annotations": anns, "categories": categories}))
    descriptors, filtered = load_coco(path, coco_dir / "train2017")
    assert COCO_TO_YTVIS19[3] == 6 and 10 not in COCO_TO_YTVIS19
    assert len(descriptors) == 1 and [i["category_id"] for i in descriptors[0]["instances"]] == [6]
    assert filtered == {"no instance of a kept category": 1}


def test_coco_schema_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "height": 4, "width": 4, "file_name": "a.jpg"}],
                "annotations": [{"image_id": 1, "category_id": 1, "segmentation": 7}],
                "categories": [],
            }
        )
    )
    with pytest.raises(AnnotationSchemaError, match=r"annotations\[0\]\.segmentation: expected RLE dict"):
        load_coco(path, tmp_path)


def test_joint_ytvis_and_coco_prepare(coco_dir: Path, tmp_path: Path) -> None:
    ytvis_root = tmp_path / "ytvis"
    ytvis_json = generate_ytvis(ytvis_root, 2, 48, 48, 3, 4, seed=9)
    sources = [
        Source("ytvis", str(ytvis_json), str(ytvis_root)),
        Source(
            "coco", str(coco_dir / "annotations" / "instances_train2017.json"), str(coco_dir / "train2017"), "identity"
        ),
    ]
    manifest = prepare(sources, tmp_path / "out", PrepareOptions(shard_size=3))
    assert manifest["records_by_dataset"] == {"ytvis": 2, "coco": 4}
    assert [s["dataset"] for s in manifest["shards"]] == ["ytvis", "coco", "coco"]
    assert {r["dataset"] for r in iter_records(tmp_path / "out", datasets=("coco",))} == {"coco"}
