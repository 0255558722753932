"""Window planning, streamed windows, cross-window association, atomic per-video outputs and the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seqformer.pipelines.inference import (
    AssociationConfig,
    VideoTracker,
    WindowOutput,
    commit_video_outputs,
    iter_windows,
    mask_iou,
    merge_duplicates,
    outputs_complete,
    owned_end,
    plan_windows,
    preprocess_frame,
    resized_size,
    summary,
    video_output_dir,
)
from seqformer.pipelines.visualize import segmentation_mask


def test_plan_windows_covers_the_video_with_full_overlapping_windows():
    assert plan_windows(10, 0, 0) == [(0, 10)]
    assert plan_windows(3, 4, 2) == [(0, 3)]
    assert plan_windows(8, 4, 2) == [(0, 4), (2, 6), (4, 8)]
    assert plan_windows(9, 4, 2) == [(0, 4), (2, 6), (4, 8), (5, 9)]  # last moved back, overlap 3
    with pytest.raises(ValueError, match="overlap"):
        plan_windows(10, 4, 4)


@pytest.mark.parametrize("window,overlap", [(0, 0), (1, 0), (4, 1), (5, 2), (7, 6)])
def test_iter_windows_streams_exactly_the_planned_windows_and_every_frame_has_one_owner(window, overlap):
    for num_frames in range(1, 23):
        got = [(s, items, last) for s, items, last in iter_windows(iter(range(num_frames)), window, overlap)]
        plan = plan_windows(num_frames, window, overlap)
        assert [(s, s + len(items)) for s, items, _ in got] == plan
        assert all(items == list(range(s, s + len(items))) for s, items, _ in got)
        assert [last for *_, last in got] == [False] * (len(plan) - 1) + [True]
        owners, previous = [], 0
        for (start, end), (*_, last) in zip(plan, got):
            stop = owned_end(end, overlap, last)
            assert start <= previous < stop <= end
            owners.extend(range(previous, stop))
            previous = stop
        assert owners == list(range(num_frames))


def test_preprocess_frame_matches_torchvision_resize_totensor_normalize():
    from PIL import Image
    from torchvision import transforms as T

    frame = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    official = T.Compose([T.Resize(36), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    expected = official(Image.fromarray(frame))
    got = preprocess_frame(frame, short_side=36)
    assert got.shape == expected.shape == (3, 36, 57) and resized_size(50, 80, 36) == (36, 57)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frame(frame.astype(np.float32))


def test_mask_iou_joint_over_frames_and_neutral_when_both_empty():
    a = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    a[0, :, :2] = True
    b = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    b[0, 0, :2] = True
    iou = mask_iou(a, b)
    assert iou[0, 0] == pytest.approx(0.5) and iou[0, 1] == 0 and iou[1, 1] == 0.5


# ---------------------------------------------------------------------------------------------------- association
def _scene(num_frames: int, objects: list[int]) -> torch.Tensor:
    """Stride-4 mask logits ``[len(objects), T, 8, 8]``: object o is a 2x2 block at column o moving down 1 px/frame."""
    logits = torch.full((len(objects), num_frames, 8, 8), -5.0)
    for i, obj in enumerate(objects):
        for t in range(num_frames):
            logits[i, t, t % 7 : t % 7 + 2, 2 * obj : 2 * obj + 2] = 5.0
    return logits


def _window(start: int, length: int, objects: list[int], embeddings: torch.Tensor, scores: list[float]) -> WindowOutput:
    """Queries in the given object order (a permutation of query slots across windows)."""
    logits = torch.full((len(objects), 3), -6.0)
    for i, (obj, score) in enumerate(zip(objects, scores)):
        logits[i, obj % 3] = torch.logit(torch.tensor(score))
    frames = _scene(start + length, objects)[:, start:]
    return WindowOutput(start, logits, embeddings[objects] + 0.01 * torch.randn(len(objects), 16), frames)


def test_tracker_follows_objects_when_query_slots_are_permuted_between_windows():
    embeddings = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1) * 3
    config = AssociationConfig(top_k=3, candidates=3)
    tracker = VideoTracker((16, 16), config)
    windows = plan_windows(10, 4, 2)
    orders = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]]
    for k, ((start, end), order) in enumerate(zip(windows, orders)):
        scores = [{0: 0.9, 1: 0.8, 2: 0.7}[o] for o in order]
        tracker.add_window(_window(start, end - start, order, embeddings, scores), owned_end(end, 2, k == 3))
    assert len(tracker.tracks) == 3  # no track was broken or duplicated
    results = tracker.results(10)
    assert [r["category_id"] for r in results] == [0, 1, 2] and results[0]["score"] == pytest.approx(0.9)
    truth = _scene(10, [0, 1, 2]) > 0  # object masks at the 8x8 logit size; outputs are 16x16 (2x2 per logit)
    for obj, entry in enumerate(results):
        for t in range(10):
            mask = segmentation_mask(entry["segmentations"][t], 16, 16)
            assert mask.reshape(8, 2, 8, 2).any(axis=(1, 3)).tolist() == truth[obj, t].tolist()


def test_tracker_starts_a_new_track_for_a_dissimilar_query_and_leaves_earlier_frames_empty():
    embeddings = torch.eye(16)[:3] * 2
    tracker = VideoTracker((8, 8), AssociationConfig(top_k=2, candidates=2))
    tracker.add_window(_window(0, 4, [0, 1], embeddings, [0.9, 0.8]), owned_end(4, 2, False))
    tracker.add_window(_window(2, 4, [0, 2], embeddings, [0.9, 0.85]), owned_end(6, 2, True))
    assert len(tracker.tracks) == 3
    results = tracker.results(6)
    new = next(r for r in results if r["category_id"] == 2)
    assert [segmentation_mask(s, 8, 8).any() for s in new["segmentations"]] == [False] * 3 + [True] * 3


def test_merge_duplicates_keeps_the_higher_scoring_query_with_the_maximum_class_probabilities():
    # candidates (query indices) 4, 1, 7: query 1 is a near copy of query 4's mask (IoU 12/16 = 0.75 > 0.5),
    # query 7 is disjoint from both, query 2 is not a candidate
    binary = torch.zeros(3, 2, 4, 4, dtype=torch.bool)
    binary[0, :, :2, :] = True  # 16 pixels over the two frames
    binary[1, :, :2, :3] = True  # 12 pixels, all inside query 4's
    binary[2, :, 3, :] = True
    probs = torch.tensor([[0.1, 0.1], [0.3, 0.8], [0.9, 0.9], [0.0, 0.0], [0.6, 0.2], [0, 0], [0, 0], [0.5, 0.1]])
    merged, keep = merge_duplicates(probs, torch.tensor([4, 1, 7]), binary, nms_iou=0.5)
    assert keep.tolist() == [False, True, True]  # query 1 (max 0.8) outranks query 4 (max 0.6): 4 is the duplicate
    assert merged[1].tolist() == pytest.approx([0.6, 0.8]) and merged[7].tolist() == pytest.approx([0.5, 0.1])
    assert merged[4].tolist() == pytest.approx([0.6, 0.2]) and probs[1].tolist() == pytest.approx([0.3, 0.8])
    _, keep = merge_duplicates(probs, torch.tensor([4, 1, 7]), binary, nms_iou=0.8)  # 0.75 is not above 0.8
    assert keep.tolist() == [True, True, True]
    empty = torch.zeros(2, 2, 4, 4, dtype=torch.bool)  # two empty masks are not duplicates of each other
    assert merge_duplicates(probs, torch.tensor([0, 3]), empty, nms_iou=0.1)[1].tolist() == [True, True]


def test_tracker_merges_duplicate_queries_into_one_track_and_scores_fragments_by_coverage():
    embeddings = torch.nn.functional.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    # windows [0,4) [2,6) [4,8): object 0 in every window, seen by two queries in the middle one (a duplicate
    # of class 1 with probability 0.7); object 2 only in the last window
    first = _window(0, 4, [0], embeddings, [0.9])
    middle = _window(2, 4, [0, 0], embeddings, [0.9, 0.2])
    middle.logits[1, 1] = torch.logit(torch.tensor(0.7))
    last = _window(4, 4, [0, 2], embeddings, [0.9, 0.8])
    low = float(torch.sigmoid(torch.tensor(-6.0)))  # _window's probability of the other classes
    for config, tracks in ((AssociationConfig(top_k=4, candidates=4), 2),
                           (AssociationConfig(top_k=4, candidates=4, nms_iou=None, coverage_exponent=0.0), 3)):
        tracker = VideoTracker((16, 16), config)
        for window, end, is_last in ((first, 4, False), (middle, 6, False), (last, 8, True)):
            tracker.add_window(window, owned_end(end, 2, is_last))  # owned frames: [0,3) [3,5) [5,8)
        assert len(tracker.tracks) == tracks
        scores = {(r["category_id"], round(r["score"], 5)) for r in tracker.results(8)}
        if tracks == 2:  # object 0 covers all 8 frames: class 0 at 0.9; class 1 at 0.7 on the 2 middle frames
            assert (0, round(0.9, 5)) in scores and (1, round((0.7 * 2 + low * 6) / 8, 5)) in scores
            assert (2, round(0.8 * (3 / 8) ** 0.5, 5)) in scores  # object 2 covers frames 5..7 of 8
        else:  # without merging the duplicate makes a track of its own, and fragments keep their plain mean
            assert (2, round(0.8, 5)) in scores


def test_tracker_rejects_windows_out_of_order():
    tracker = VideoTracker((8, 8))
    out = WindowOutput(5, torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match="in order"):
        tracker.add_window(out, 7)


# ---------------------------------------------------------------------------------------------------- outputs
def test_commit_is_atomic_and_marks_the_fingerprint(tmp_path):
    def good(folder):
        (folder / "results.json").write_text("[]")
        (folder / "overlay.mp4").write_bytes(b"x")
        (folder / "contact_sheet.png").write_bytes(b"x")
        return {"frames": 3}

    def crash(folder):
        (folder / "results.json").write_text("[")
        raise OSError("disk full")

    with pytest.raises(OSError):
        commit_video_outputs(tmp_path, "v", {"m": 1}, crash)
    assert not video_output_dir(tmp_path, "v").exists() and list((tmp_path / "videos").iterdir()) == []
    final = commit_video_outputs(tmp_path, "v", {"m": 1}, good)
    assert json.loads((final / "_COMPLETE").read_text())["frames"] == 3
    assert outputs_complete(tmp_path, "v", {"m": 1}) and not outputs_complete(tmp_path, "v", {"m": 2})
    with pytest.raises(OSError):
        commit_video_outputs(tmp_path, "v", {"m": 2}, crash)  # a failed redo keeps the old complete outputs
    assert outputs_complete(tmp_path, "v", {"m": 1})
    (final / "overlay.mp4").unlink()
    assert not outputs_complete(tmp_path, "v", {"m": 1})


def test_summary_lists_and_rates():
    report = summary(
        [{"video": "b", "frames": 10, "seconds": 1.0}, {"video": "a", "frames": 30, "seconds": 2.0}],
        [{"video": "e", "reason": "empty folder"}],
        [{"video": "x", "reason": "corrupt"}],
        4.0,
    )
    assert [p["video"] for p in report["processed"]] == ["a", "b"]
    assert report["frames_per_second"] == 10.0 and report["videos_per_second"] == 0.5
