"""The compiled helpers against pycocotools: video IoU sums on random masks (empty masks, null frames, size mismatches,
different frame counts), areas and validity of RLE strings, and the compiled results-file reader against json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from seqformer.pipelines.evaluation import evaluate_files
from seqformer.pipelines.evaluation._extension import load
from seqformer.pipelines.evaluation.detections import parse_results, read_results_file
from seqformer.pipelines.evaluation.frames import build_table
from seqformer.pipelines.evaluation.ground_truth import parse_ground_truth
from seqformer.pipelines.evaluation.io import Problems
from seqformer.pipelines.evaluation.video_iou import video_ious
from tests.pipelines.evaluation.cases import gt_file, rle
from tests.pipelines.evaluation.oracle import official_video_iou

pytestmark = pytest.mark.build


def _random_track(rng: np.random.Generator, frames: int, sizes: list[tuple[int, int]]) -> list[dict | None]:
    track = []
    for _ in range(frames):
        kind = rng.random()
        if kind < 0.15:
            track.append(None)
            continue
        h, w = sizes[0] if rng.random() < 0.85 else sizes[int(rng.integers(len(sizes)))]
        if kind < 0.3:
            mask = np.zeros((h, w), bool)  # an empty mask is present with area 0
        elif kind < 0.4:
            mask = np.ones((h, w), bool)
        else:
            mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)  # many short runs, in every column
        track.append(rle(mask))
    return track


def _table(tracks: list[list[dict | None]]):
    table = build_table([[(s["size"][0], s["size"][1], s["counts"]) if s else None for s in t] for t in tracks])
    assert table.compute_areas() is None
    return table


@pytest.mark.parametrize("seed", range(6))
def test_compiled_video_iou_equals_the_official_pycocotools_walk(seed):
    rng = np.random.default_rng(seed)
    sizes = [(7, 9), (9, 7), (7, 8)]
    dts = [_random_track(rng, int(rng.integers(0, 8)), sizes) for _ in range(7)]
    gts = [_random_track(rng, int(rng.integers(0, 8)), sizes) for _ in range(4)]
    dt_table, gt_table = _table(dts), _table(gts)
    inter = np.zeros(len(dts) * len(gts), np.int64)
    union = np.zeros_like(inter)
    offsets = np.array([0, len(dts)], np.int64), np.array([0, len(gts)], np.int64)
    load().pair_sums(
        *(dt_table.buf, dt_table.start, dt_table.length, dt_table.height, dt_table.width, dt_table.area),
        dt_table.offsets,
        *(gt_table.buf, gt_table.start, gt_table.length, gt_table.height, gt_table.width, gt_table.area),
        gt_table.offsets,
        *(offsets[0], np.arange(len(dts), dtype=np.int64), offsets[1], np.arange(len(gts), dtype=np.int64)),
        inter,
        union,
    )
    got = np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0).reshape(len(dts), len(gts))
    expected = np.array([[official_video_iou(d, g) for g in gts] for d in dts])
    np.testing.assert_array_equal(got, expected)  # the same division of the same exact integers


def test_areas_match_pycocotools_and_corrupt_strings_are_flagged():
    rng = np.random.default_rng(0)
    segs = [rle(rng.random((5, 6)) < p) for p in (0.0, 0.3, 0.7, 1.0)]
    table = _table([segs])
    np.testing.assert_array_equal(table.area, [mask_utils.area(s) for s in segs])
    bad = build_table([[(5, 6, segs[1]["counts"]), (5, 6, "a b!"), (5, 6, "1o"), (5, 6, "06"), (5, 6, "")]])
    assert bad.compute_areas() == 1
    reasons = [bad.invalid_reason(f) for f in range(1, 5)]
    assert "outside" in reasons[0] and "middle of a run" in reasons[1]
    assert "sum to 6" in reasons[2] and "sum to 0" in reasons[3]


def test_video_ious_per_problem_blocks_match_the_official_walk():
    rng = np.random.default_rng(1)
    masks = [[rng.random((6, 5)) < 0.5 for _ in range(3)] for _ in range(3)]
    gt = gt_file(
        [(1, 6, 5, 3)],
        [1, 2],
        [{"id": k + 1, "video_id": 1, "category_id": 1 + k % 2, "masks": masks[k]} for k in range(3)],
    )
    parsed = parse_ground_truth(gt)
    results = [
        {"video_id": 1, "category_id": 1 + k % 2, "score": 0.5, "segmentations": [rle(m) for m in masks[(k + 1) % 3]]}
        for k in range(4)
    ]
    dets = parse_results(results, parsed, Problems())
    keys = [(1, 1), (1, 2)]
    groups = {key: [e for e, r in enumerate(results) if (r["video_id"], r["category_id"]) == key] for key in keys}
    blocks = video_ious(dets, parsed, [(groups[k], [t.index for t in parsed.tracks[k]]) for k in keys])
    for key, block in zip(keys, blocks):
        expected = [
            [
                official_video_iou(results[e]["segmentations"], [rle(m) for m in masks[t.ann_id - 1]])
                for t in parsed.tracks[key]
            ]
            for e in groups[key]
        ]
        np.testing.assert_array_equal(block, expected)


def test_compiled_reader_equals_the_json_path_and_hands_other_shapes_over(tmp_path, caplog):
    rng = np.random.default_rng(2)
    gt = gt_file(
        [(3, 4, 4, 2)], [1], [{"id": 1, "video_id": 3, "category_id": 1, "masks": [rng.random((4, 4)) < 0.5] * 2}]
    )
    parsed = parse_ground_truth(gt)
    results = [
        {"video_id": 3, "category_id": 1, "score": s, "segmentations": [rle(rng.random((4, 4)) < 0.5), None], "id": [1]}
        for s in (0.1, 1, 2.5e-3, 0.30000000000000004)
    ]
    path = tmp_path / "res.json"
    path.write_text(json.dumps(results, indent=1).replace('"counts"', '"counts" ').replace("\\\\", "\\u005c"))
    fast = read_results_file(path, parsed, Problems())
    slow = parse_results(json.loads(path.read_text()), parsed, Problems())
    assert fast.video_ids == slow.video_ids and fast.category_ids == slow.category_ids
    np.testing.assert_array_equal(fast.scores, slow.scores)
    np.testing.assert_array_equal(fast.frames.area, slow.frames.area)
    np.testing.assert_array_equal(fast.frames.start >= 0, slow.frames.start >= 0)
    present = np.flatnonzero(slow.frames.start >= 0)
    assert [fast.frames.counts_text(f) for f in present] == [slow.frames.counts_text(f) for f in present]
    path.write_text(json.dumps([{**results[0], "video_id": "3"}]))  # not an integer id: the general parser reads it
    with caplog.at_level("INFO"), pytest.raises(ValueError, match="video_id '3' is not a video"):
        read_results_file(path, parsed, Problems())
    assert "general JSON parser" in caplog.text
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    path.write_text(json.dumps(results))
    assert evaluate_files(gt_path, path)["AP"] >= 0


class _GeneralPathOnly:
    """Stands in for the compiled module: ``encode_tracks`` always hands the file to the general path."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)

    def encode_tracks(self, tracks):
        return 0


def test_compiled_gt_reader_equals_the_general_path(monkeypatch):
    from seqformer.pipelines.evaluation import ground_truth

    rng = np.random.default_rng(3)
    masks = [[rng.random((6, 5)) < p if p is not None else None for p in (0.5, None, 0.0, 1.0, 0.3)] for _ in range(3)]
    gt = gt_file(
        [(1, 6, 5, 5), (2, 6, 5, 5)],
        [1, 2],
        [{"id": k + 1, "video_id": 1 + k % 2, "category_id": 1 + k // 2, "masks": masks[k]} for k in range(3)],
    )
    segs = gt["annotations"][0]["segmentations"]
    segs[0] = rle(masks[0][0])  # a compressed string among uncompressed lists
    segs[4] = rle(rng.random((5, 6)) < 0.5)  # a mask of another size than the video
    gt["annotations"][1]["segmentations"][2] = {"size": [6, 5], "counts": [30]}  # one run only
    fast = parse_ground_truth(gt, Problems())
    monkeypatch.setattr(ground_truth, "load", lambda: _GeneralPathOnly(load()))
    slow = parse_ground_truth(gt, Problems())
    assert fast.problems == slow.problems and any("masks of size [(5, 6)]" in p for p in fast.problems)
    for name in ("start", "length", "height", "width", "area", "offsets"):
        np.testing.assert_array_equal(getattr(fast.frames, name) >= 0, getattr(slow.frames, name) >= 0)
    for name in ("height", "width", "area", "offsets"):
        np.testing.assert_array_equal(getattr(fast.frames, name), getattr(slow.frames, name))
    present = np.flatnonzero(slow.frames.start >= 0)
    assert [fast.frames.counts_text(f) for f in present] == [slow.frames.counts_text(f) for f in present]
    assert fast.tracks.keys() == slow.tracks.keys()
    for key in fast.tracks:
        got = [(t.ann_id, t.index, t.avg_area, t.odd_sizes) for t in fast.tracks[key]]
        assert got == [(t.ann_id, t.index, t.avg_area, t.odd_sizes) for t in slow.tracks[key]]


@pytest.mark.parametrize("escape", ["plain", "unicode", "non-ascii"])
def test_compiled_reader_unescapes_long_strings_like_json(tmp_path, escape):
    """Long counts strings (many 16-byte blocks) with escaped backslashes at many offsets read as json reads them."""
    rng = np.random.default_rng(4)
    gt = gt_file(
        [(1, 60, 80, 3)], [1], [{"id": 1, "video_id": 1, "category_id": 1, "masks": [rng.random((60, 80)) < 0.5] * 3}]
    )
    parsed = parse_ground_truth(gt)
    results = [
        {"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [rle(rng.random((60, 80)) < p) for _ in "abc"]}
        for p in (0.05, 0.5, 0.95)
    ]
    text = json.dumps(results)
    assert text.count("\\\\") > 10  # backslashes are common in compressed counts
    if escape == "unicode":
        text = text.replace("\\\\", "\\u005c")
    elif escape == "non-ascii":  # a byte the compiled reader hands to the general parser, which names the frame
        middle = text.index('"counts": "', len(text) // 2) + 60
        text = text[:middle] + "\u00e9" + text[middle + 1 :]
    path = tmp_path / "res.json"
    path.write_text(text)
    expected = json.loads(text)
    if escape == "non-ascii":
        with pytest.raises(ValueError, match="outside") as from_file:
            read_results_file(path, parsed, Problems())
        with pytest.raises(ValueError, match="outside") as from_list:
            parse_results(expected, parsed, Problems(), source="results")
        # the same entry, frame and reason
        assert str(from_file.value).split("res.json", 1)[1] == str(from_list.value).split("results", 1)[1]
        return
    fast = read_results_file(path, parsed, Problems())
    slow = parse_results(expected, parsed, Problems())
    np.testing.assert_array_equal(fast.frames.area, slow.frames.area)
    present = np.flatnonzero(slow.frames.start >= 0)
    assert [fast.frames.counts_text(f) for f in present] == [slow.frames.counts_text(f) for f in present]
    assert [fast.frames.counts_text(f) for f in present] == [s["counts"] for r in results for s in r["segmentations"]]


def _track_frames(gt, track):
    """Per frame of one track: (present, height, width, area, counts) from its GT's frame table."""
    table = gt.frames
    first, last = int(table.offsets[track.index]), int(table.offsets[track.index + 1])
    return [
        (
            bool(table.start[f] >= 0),
            int(table.height[f]),
            int(table.width[f]),
            int(table.area[f]),
            table.counts_text(f) if table.start[f] >= 0 else None,
        )
        for f in range(first, last)
    ]


def _same_ground_truth(fast, slow):
    assert fast.problems == slow.problems
    assert fast.video_ids == slow.video_ids and fast.category_ids == slow.category_ids
    assert fast.tracks.keys() == slow.tracks.keys()
    for key in fast.tracks:
        for a, b in zip(fast.tracks[key], slow.tracks[key], strict=True):
            fields = [(t.ann_id, t.crowd, t.ignore, repr(t.avg_area), t.odd_sizes) for t in (a, b)]  # nan == nan
            assert fields[0] == fields[1]
            assert _track_frames(fast, a) == _track_frames(slow, b)


def test_compiled_gt_file_reader_equals_json_and_the_general_path(tmp_path, caplog):
    from seqformer.pipelines.evaluation.ground_truth import read_ground_truth_file

    rng = np.random.default_rng(5)
    masks = [[rng.random((6, 5)) < 0.5 for _ in range(3)] for _ in range(5)]
    gt = gt_file(
        [(7, 6, 5, 3), (2, 6, 5, 3)],
        [3, 1],
        [{"id": [4, 1, 4, 0, 9][k], "video_id": [7, 2, 7, 2, 2][k], "category_id": 1 + k % 3, "masks": masks[k]}
         for k in range(5)],
    )  # fmt: skip
    anns = gt["annotations"]
    anns[1]["segmentations"][0] = rle(masks[1][0])  # a compressed string
    anns[1]["segmentations"][1] = {"size": [5, 6], "counts": rle(rng.random((5, 6)) < 0.5)["counts"], "x": [1]}
    anns[3]["segmentations"][2] = {}  # falsy: absent
    anns[4]["segmentations"] = anns[4]["segmentations"][:2]  # shorter than the video
    anns[4]["iscrowd"] = 1
    anns.append({**anns[0], "id": 11, "video_id": 99})  # a video that is not listed
    gt["categories"].append({"id": 5, "name": 'caf\\u00e9 "quoted"'})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt, indent=1))
    with caplog.at_level("INFO"):
        fast = read_ground_truth_file(path, Problems())
    assert "general JSON parser" not in caplog.text
    _same_ground_truth(fast, parse_ground_truth(json.loads(path.read_text()), Problems(), str(path)))
    assert fast.category_names[5] == 'caf\\u00e9 "quoted"'
    # shapes the compiled reader leaves to the general path: the same ground truth, or the same error, either way
    original = path.read_text()
    for change in ("polygon", "non-ascii", "float-count", "nan"):
        data = json.loads(original)
        if change == "polygon":
            data["annotations"][2]["segmentations"][1] = [[0.0, 0.0, 4.0, 0.0, 4.0, 3.0]]
        elif change == "non-ascii":
            data["categories"][0]["name"] = "caf\u00e9"
        elif change == "float-count":
            data["annotations"][2]["segmentations"][2]["counts"][0] += 0.0
        else:
            data["annotations"][2]["areas"][1] = float("nan")
        path.write_text(json.dumps(data, ensure_ascii=False))
        caplog.clear()
        if change == "float-count":
            with pytest.raises(ValueError, match=r"annotations\[2\].*frame 2.*integers") as from_file:
                read_ground_truth_file(path, Problems())
            with pytest.raises(ValueError) as from_json:
                parse_ground_truth(json.loads(path.read_text()), Problems(), str(path))
            assert str(from_file.value) == str(from_json.value)
            continue
        with caplog.at_level("INFO"):
            fast = read_ground_truth_file(path, Problems())
        assert "general JSON parser" in caplog.text
        _same_ground_truth(fast, parse_ground_truth(json.loads(path.read_text()), Problems(), str(path)))


@pytest.mark.parametrize("seed", range(4))
def test_files_score_as_the_parsed_objects(tmp_path, seed):
    from seqformer.pipelines.evaluation import METRIC_KEYS, evaluate
    from tests.pipelines.evaluation.cases import random_case

    gt, results = random_case(seed, malformed=seed % 2 == 1)
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    from_files = evaluate_files(gt_path, res_path)
    from_objects = evaluate(gt, results, gt_source=str(gt_path), results_source=str(res_path))
    assert [from_files[k] for k in METRIC_KEYS] == [from_objects[k] for k in METRIC_KEYS]
    assert from_files["per_category"] == from_objects["per_category"]
    assert from_files["warnings"] == from_objects["warnings"]
