"""The synthetic generator writes the exact YouTube-VIS layout with honest, varied content."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from seqformer.pipelines.masks import segmentation_to_mask
from seqformer.pipelines.synthetic import _render_video, categories, generate_coco, generate_ytvis, write_mp4
from seqformer.pipelines.video_io import read_video
from seqformer.pipelines.ytvis import validate_ytvis


def test_layout_and_format_match_youtube_vis(synthetic_source: tuple[Path, Path]) -> None:
    root, annotations = synthetic_source
    data = json.loads(annotations.read_text())
    validate_ytvis(data, str(annotations))
    assert len(data["videos"]) == 5
    assert {c["name"] for c in data["categories"]} == {"circle", "square", "triangle", "star"}
    for video in data["videos"]:
        assert 4 <= video["length"] == len(video["file_names"]) <= 8
        for name in video["file_names"]:
            assert Image.open(root / "JPEGImages" / name).size == (64, 64)
        instances = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        assert 1 <= len(instances) <= 5
        for ann in instances:
            assert len(ann["segmentations"]) == len(ann["bboxes"]) == len(ann["areas"]) == video["length"]
            for seg, box, area in zip(ann["segmentations"], ann["bboxes"], ann["areas"]):
                assert (seg is None) == (box is None) == (area is None)
                if seg is not None:
                    mask = segmentation_to_mask(seg, 64, 64)
                    assert mask.sum() == area
                    ys, xs = np.nonzero(mask)
                    assert box == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]


def test_same_seed_same_data_and_other_seed_differs(tmp_path: Path) -> None:
    a = generate_ytvis(tmp_path / "a", 2, 48, 48, 3, 3, seed=1)
    b = generate_ytvis(tmp_path / "b", 2, 48, 48, 3, 3, seed=1)
    c = generate_ytvis(tmp_path / "c", 2, 48, 48, 3, 3, seed=2)
    assert a.read_text() == b.read_text()
    assert (tmp_path / "a/JPEGImages/video_1_00000/00000.jpg").read_bytes() == (
        tmp_path / "b/JPEGImages/video_1_00000/00000.jpg"
    ).read_bytes()
    assert json.loads(a.read_text())["annotations"] != json.loads(c.read_text())["annotations"]


def test_content_is_varied_enough_to_need_shapes_and_motion(tmp_path: Path) -> None:
    annotations = generate_ytvis(tmp_path, 40, 64, 64, 10, 20, seed=0)
    data = json.loads(annotations.read_text())
    by_category: dict[int, list[np.ndarray]] = {}
    enter_or_leave = scale_change = occluded = 0
    for ann in data["annotations"]:
        video = next(v for v in data["videos"] if v["id"] == ann["video_id"])
        present = [s is not None for s in ann["segmentations"]]
        enter_or_leave += (not all(present)) and any(present)
        areas = [a for a in ann["areas"] if a]
        scale_change += max(areas) > 1.5 * min(areas)
        t = present.index(True)
        frame = np.asarray(Image.open(tmp_path / "JPEGImages" / video["file_names"][t]), dtype=np.float32)
        mask = segmentation_to_mask(ann["segmentations"][t], 64, 64)
        by_category.setdefault(ann["category_id"], []).append(frame[mask].mean(0))
    for index in range(10):  # occlusion: some shapes are partly hidden behind others
        _, tracks, _ = _render_video(np.random.default_rng([0, index]), 10, 64, 64, categories(4))
        occluded += sum(1 for track in tracks if max(track["occluded_pixels"]) > 20)
    assert len(by_category) == 4
    assert enter_or_leave >= 5 and scale_change >= 5 and occluded >= 3
    # colour does not separate the classes: every category's mean colours span most of the range
    for colours in by_category.values():
        spread = np.ptp(np.stack(colours), axis=0)
        assert (spread > 80).all(), spread


def test_coco_layout(tmp_path: Path) -> None:
    path = generate_coco(tmp_path, 3, 64, 64, seed=0)
    data = json.loads(path.read_text())
    assert path == tmp_path / "annotations" / "instances_train2017.json"
    assert len(data["images"]) == 3 and data["annotations"]
    for image in data["images"]:
        assert (tmp_path / "train2017" / image["file_name"]).is_file()
    assert all({"segmentation", "bbox", "area", "image_id", "category_id"} <= set(a) for a in data["annotations"])


def test_write_mp4_round_trips_frame_count(synthetic_source: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = synthetic_source
    video_dir = sorted((root / "JPEGImages").iterdir())[0]
    path = write_mp4(video_dir, tmp_path / "v.mp4")
    frames = read_video(path)
    assert len(frames) == len(list(video_dir.glob("*.jpg")))
    assert frames[0].shape == (64, 64, 3)
