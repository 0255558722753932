"""Bad input: per-video problems are skipped with a reason in the manifest; schema errors fail fast with the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seqformer.pipelines.clip_records import iter_records
from seqformer.pipelines.prepare import PrepareOptions, Source, prepare
from seqformer.pipelines.synthetic import corrupt_garbage, corrupt_truncate
from seqformer.pipelines.ytvis import AnnotationSchemaError


def _run(root: Path, annotations: Path, out: Path) -> dict:
    return prepare([Source("ytvis", str(annotations), str(root))], out, PrepareOptions(shard_size=2))


def _edit(annotations: Path, change) -> None:  # noqa: ANN001
    data = json.loads(annotations.read_text())
    change(data)
    annotations.write_text(json.dumps(data))


def _reasons(manifest: dict) -> dict[int, str]:
    return {s["video_id"]: s["reason"] for s in manifest["skipped"]}


def test_each_bad_video_is_skipped_with_its_reason_and_the_rest_is_processed(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy
    videos = json.loads(annotations.read_text())["videos"]
    frames = root / "JPEGImages"
    corrupt_truncate(frames / videos[0]["file_names"][1])  # video 1: truncated JPEG
    (frames / videos[1]["file_names"][0]).unlink()  # video 2: missing frame

    def change(data: dict) -> None:
        data["videos"][2]["length"] += 1  # video 3: frame count disagrees with the JSON
        ann = next(a for a in data["annotations"] if a["video_id"] == 4)
        ann["category_id"] = 99  # video 4: unknown category
        data["annotations"].append({**ann, "id": 1000, "video_id": 77, "category_id": 1})  # no such video
        data["videos"].append({"id": 6, "height": 64, "width": 64, "length": 0, "file_names": []})  # empty video

    _edit(annotations, change)
    manifest = _run(root, annotations, tmp_path / "out")
    reasons = _reasons(manifest)
    assert set(reasons) == {1, 2, 3, 4, 6, 77}
    assert "corrupt frame" in reasons[1] and "missing frame" in reasons[2]
    assert "frame count disagrees" in reasons[3] and "unknown category id 99" in reasons[4]
    assert "empty video" in reasons[6] and "not in 'videos'" in reasons[77]
    assert manifest["records"] == 1 and [r["video_id"] for r in iter_records(tmp_path / "out")] == [5]


def test_missing_video_folder_garbage_frame_and_wrong_size_are_skipped(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy
    videos = json.loads(annotations.read_text())["videos"]
    shutil.rmtree(root / "JPEGImages" / videos[0]["file_names"][0].split("/")[0])
    corrupt_garbage(root / "JPEGImages" / videos[1]["file_names"][2])
    _edit(annotations, lambda data: data["videos"][2].update(height=80))
    reasons = _reasons(_run(root, annotations, tmp_path / "out"))
    assert set(reasons) == {1, 2, 3}
    assert "missing frame" in reasons[1] and "corrupt frame" in reasons[2] and "frame size disagrees" in reasons[3]


def test_segmentation_count_mismatch_is_skipped(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy
    _edit(annotations, lambda data: data["annotations"][0]["segmentations"].pop())
    reasons = _reasons(_run(root, annotations, tmp_path / "out"))
    assert list(reasons) == [1] and "segmentations" in reasons[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["annotations"][3]["segmentations"].__setitem__(2, 5),
            r"annotations\[3\]\.segmentations\[2\]: expected RLE dict, polygon list or null, got 5",
        ),
        (lambda d: d.pop("videos"), "missing top-level key 'videos'"),
        (lambda d: d["videos"][1].__setitem__("file_names", "a.jpg"), r"videos\[1\]\.file_names: expected a list"),
        (
            lambda d: d["annotations"][0].__setitem__("video_id", "1"),
            r"annotations\[0\]\.video_id: expected an integer",
        ),
        (lambda d: d["annotations"][1]["bboxes"].__setitem__(0, [1, 2]), r"annotations\[1\]\.bboxes\[0\]"),
        (
            lambda d: d["annotations"][2]["segmentations"].__setitem__(0, {"size": [64], "counts": "x"}),
            r"annotations\[2\]\.segmentations\[0\]\.size",
        ),
    ],
)
def test_schema_errors_fail_fast_naming_the_field(ytvis_copy, tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    root, annotations = ytvis_copy
    _edit(annotations, change)
    with pytest.raises(AnnotationSchemaError, match=message):
        _run(root, annotations, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_invalid_json_and_missing_file(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        _run(root, root / "nope.json", tmp_path / "out")
    annotations.write_text('{"videos": [}')
    with pytest.raises(AnnotationSchemaError, match="not valid JSON"):
        _run(root, annotations, tmp_path / "out")


def test_polygon_and_uncompressed_rle_segmentations_are_read(ytvis_copy, tmp_path: Path) -> None:
    root, annotations = ytvis_copy

    def change(data: dict) -> None:
        ann = data["annotations"][0]
        for t, seg in enumerate(ann["segmentations"]):
            if seg is not None:
                ann["segmentations"][t] = [[10, 10, 30, 10, 30, 30, 10, 30]]
                ann["bboxes"][t] = None  # box derived from the mask
        ann = data["annotations"][1]
        for t, seg in enumerate(ann["segmentations"]):
            if seg is not None:
                ann["segmentations"][t] = {"size": [64, 64], "counts": [64 * 10, 64 * 5, 64 * 49]}

    _edit(annotations, change)
    _run(root, annotations, tmp_path / "out")
    from seqformer.pipelines.clip_records import record_boxes, record_masks

    records = list(iter_records(tmp_path / "out"))
    data = json.loads(annotations.read_text())
    first = next(r for r in records if r["video_id"] == data["annotations"][0]["video_id"])
    t = next(t for t, v in enumerate(first["instances"][0]["valid"]) if v)
    mask = record_masks(first)[0, t]
    assert mask[10:30, 10:30].all() and mask.sum() == 400
    assert record_boxes(first)[0, t].tolist() == [10, 10, 30, 30]
    second = next(r for r in records if r["video_id"] == data["annotations"][1]["video_id"])
    index = [i["id"] for i in second["instances"]].index(data["annotations"][1]["id"])
    t = next(t for t, v in enumerate(second["instances"][index]["valid"]) if v)
    mask = record_masks(second)[index, t]
    assert mask[:, 10:15].all() and mask.sum() == 64 * 5  # column-major: columns 10..14
