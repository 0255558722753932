"""Clip sampling, clip-consistent augmentation, tensors of the batch contract, determinism, eval preprocessing."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from seqformer.pipelines.collate import iter_clip_batches, make_sample
from seqformer.pipelines.masks import encode_rle, mask_to_box
from seqformer.pipelines.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentationConfig,
    ClipAugmentation,
    eval_clip,
    photometric_distort,
    sample_clip,
    sample_frame_indices,
    to_tensors,
)

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
SMALL = AugmentationConfig(
    train_scales=(48, 64, 80), max_train_size=120, crop_scales=(64, 72), crop_min=40, crop_max=64, photometric=False
)


def _png(array: np.ndarray) -> bytes:  # lossless, so colours stay exact
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(num_frames: int = 6, height: int = 48, width: int = 64, absent: tuple[int, int] | None = (1, 2)) -> dict:
    """Frames with three solid rectangles (red, green, blue) that move; instance ``absent`` missing in one frame."""
    frames, rles, boxes, valid = [], [[], [], []], [[], [], []], [[], [], []]
    for t in range(num_frames):
        image = np.zeros((height, width, 3), dtype=np.uint8)
        for n, colour in enumerate(COLOURS):
            mask = np.zeros((height, width), dtype=bool)
            if absent != (n, t):
                y, x = 4 + 12 * n, 3 + 4 * t + 5 * n
                mask[y : y + 10, x : x + 14 + n] = True
                image[mask] = colour
            rles[n].append(encode_rle(mask) if mask.any() else None)
            boxes[n] += mask_to_box(mask).tolist()
            valid[n].append(bool(mask.any()))
        frames.append(_png(image))
    instances = [
        {"id": n + 1, "category_id": n + 1, "iscrowd": 0, "rles": rles[n], "boxes": boxes[n], "valid": valid[n]}
        for n in range(3)
    ]
    return {
        "dataset": "ytvis",
        "video_id": 7,
        "video_name": "v",
        "chunk": 0,
        "frame_ids": list(range(num_frames)),
        "file_names": [f"v/{t:05d}.png" for t in range(num_frames)],
        "height": height,
        "width": width,
        "stored_height": height,
        "stored_width": width,
        "frames": frames,
        "num_instances": 3,
        "instances": instances,
    }


def test_sampling_rule_local_window_and_global_frames() -> None:
    for seed in range(50):
        rng = np.random.default_rng(seed)
        indices = sample_frame_indices(30, 5, rng, anchor=10)
        assert len(indices) == 5 and indices == sorted(indices) and 10 in indices
        assert any(7 <= i <= 9 for i in indices) and any(11 <= i <= 13 for i in indices)
    assert sample_frame_indices(1, 5, np.random.default_rng(0)) == [0] * 5
    assert sample_frame_indices(8, 1, np.random.default_rng(0), anchor=3) == [3]
    pair = sample_frame_indices(8, 2, np.random.default_rng(0), anchor=3)
    assert len(pair) == 2 and 3 in pair and max(pair) - min(pair) <= 3
    assert len(sample_frame_indices(3, 8, np.random.default_rng(0))) == 8  # repeats when the video is too short
    assert sample_frame_indices(5, 3, np.random.default_rng(1), anchor=0)[0] == 0  # clamps at the start


def test_augmentation_keeps_frames_masks_and_boxes_aligned() -> None:
    record = _record()
    augment = ClipAugmentation(SMALL)
    for seed in range(25):
        rng = np.random.default_rng(seed)
        clip = augment(sample_clip(record, 4, rng), rng)
        assert clip is not None
        height, width = clip.frames[0].size[::-1]
        assert clip.masks.shape[-2:] == (height, width)
        for n, label in enumerate(clip.labels):
            colour = np.array(COLOURS[label - 1])
            for t, frame in enumerate(clip.frames):
                pixels = np.asarray(frame)[clip.masks[n, t]]
                if not clip.valid[n, t]:
                    assert not clip.masks[n, t].any() and (clip.boxes[n, t] == 0).all()
                    continue
                # mask pixels show the instance's colour (bilinear edges blend with the black background)
                channel = int(np.argmax(colour))
                assert (pixels.argmax(axis=1) == channel).mean() > 0.95
                assert pixels[:, channel].mean() > 120
                # the box follows the mask (nearest-resized mask vs exactly scaled box: within ~1.5 px)
                np.testing.assert_allclose(clip.boxes[n, t], mask_to_box(clip.masks[n, t]), atol=1.6)


@pytest.mark.parametrize(("crop_prob", "low", "high"), [(0.0, 0, 0), (0.5, 10, 30), (1.0, 40, 40)])
def test_crop_prob_sets_how_often_the_random_crop_branch_runs(
    monkeypatch: pytest.MonkeyPatch, crop_prob: float, low: int, high: int
) -> None:
    import seqformer.pipelines.transforms as transforms

    calls = []
    real_crop = transforms._crop
    monkeypatch.setattr(transforms, "_crop", lambda clip, *box: (calls.append(box), real_crop(clip, *box)))
    cfg = AugmentationConfig(
        train_scales=(48,), max_train_size=200, crop_scales=(64,), crop_min=30, crop_max=40, crop_prob=crop_prob,
        photometric=False,
    )
    for seed in range(40):
        rng = np.random.default_rng(seed)
        clip = ClipAugmentation(cfg)(sample_clip(_record(), 3, rng), rng)
        if crop_prob == 0.0:  # the whole 48x64 frame, only rescaled: every instance keeps all of its frames
            expected = [[(n, int(t)) != (1, 2) for t in clip.frame_ids] for n in range(3)]  # record: (1, 2) absent
            assert clip.frames[0].size == (64, 48) and clip.valid.tolist() == expected
    assert low <= len(calls) <= high
    # the same draws are taken whatever crop_prob is: a clip that skips the crop at 0.5 is identical at 0.0
    half, none = (dataclasses.replace(cfg, crop_prob=p) for p in (0.5, 0.0))
    for seed in range(40):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        calls.clear()
        a = ClipAugmentation(half)(sample_clip(_record(), 3, rng_a), rng_a)
        if calls:
            continue
        b = ClipAugmentation(none)(sample_clip(_record(), 3, rng_b), rng_b)
        assert [np.asarray(f).tobytes() for f in a.frames] == [np.asarray(f).tobytes() for f in b.frames]
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.boxes, b.boxes)
        break
    else:
        pytest.fail("no seed skipped the crop at crop_prob 0.5")


def test_flip_and_photometric_per_frame_but_geometry_per_clip() -> None:
    record = _record()
    cfg = AugmentationConfig(
        train_scales=(48,), max_train_size=64, crop_scales=(48,), crop_min=48, crop_max=64, photometric=True
    )
    rng = np.random.default_rng(3)
    clip = ClipAugmentation(cfg)(sample_clip(record, 5, rng), rng)
    assert clip is not None and len({f.size for f in clip.frames}) == 1  # one geometry for the whole clip
    image = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    outs = {np.asarray(photometric_distort(image, np.random.default_rng(s))).tobytes() for s in range(10)}
    assert len(outs) > 5  # drawn independently per frame
    wrapped = np.asarray(
        photometric_distort(Image.fromarray(np.full((4, 4, 3), 250, np.uint8)), np.random.default_rng(0), "clip")
    )
    assert wrapped.dtype == np.uint8


def test_tensors_follow_the_batch_contract() -> None:
    rng = np.random.default_rng(0)
    clip = ClipAugmentation(SMALL)(sample_clip(_record(), 5, rng, anchor=2), rng)
    frames, target = to_tensors(clip)
    num_t, height, width = 5, frames.shape[-2], frames.shape[-1]
    assert frames.shape == (num_t, 3, height, width) and frames.dtype == torch.float32
    num = len(target["labels"])
    assert target["labels"].dtype == torch.int64
    assert target["boxes"].shape == (num, num_t, 4) and target["boxes"].dtype == torch.float32
    assert target["masks"].shape == (num, num_t, height, width) and target["masks"].dtype == torch.bool
    assert target["valid"].shape == (num, num_t) and target["valid"].dtype == torch.bool
    assert target["size"].tolist() == [height, width] and target["orig_size"].tolist() == [48, 64]
    assert target["video_id"] == 7 and target["frame_ids"].shape == (num_t,)
    assert (target["boxes"] >= 1e-6).all() and (target["boxes"] <= 1).all()
    absent = ~target["valid"]
    assert torch.all(target["boxes"][absent] == 1e-6)
    # de-normalising gives the colours back
    pixels = frames.permute(0, 2, 3, 1).numpy() * IMAGENET_STD + IMAGENET_MEAN
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_sampling_and_augmentation_are_deterministic_for_a_seed() -> None:
    records = [_record(), {**_record(), "video_id": 8}]

    def batches(seed: int) -> list:
        return list(iter_clip_batches(records, num_frames=3, batch_size=2, augmentation=SMALL, seed=seed))

    first, again, other = batches(1), batches(1), batches(2)
    assert len(first) == 1 and len(first[0]["clips"]) == 2
    for a, b in zip(first[0]["clips"], again[0]["clips"]):
        assert torch.equal(a, b)
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(first[0]["clips"], other[0]["clips"]))


def test_per_frame_items_and_shuffle_buffer() -> None:
    record = _record(num_frames=4)
    items = list(
        iter_clip_batches(
            [record],
            num_frames=2,
            batch_size=1,
            augmentation=SMALL,
            seed=0,
            items_per_video="per_frame",
            shuffle_buffer=3,
        )
    )
    assert len(items) == 4
    assert sorted({int(i) for b in items for i in b["targets"][0]["frame_ids"]}) != []
    with pytest.raises(ValueError, match="items_per_video"):
        list(iter_clip_batches([record], num_frames=2, batch_size=1, items_per_video="all"))  # type: ignore[arg-type]


def test_clip_without_surviving_instances_is_resampled_then_dropped() -> None:
    record = _record()
    for inst in record["instances"]:
        inst["valid"] = [False] * 6
        inst["rles"] = [None] * 6
        inst["boxes"] = [0.0] * 24
    assert make_sample(record, num_frames=2, augmentation=ClipAugmentation(SMALL), seed=0, max_attempts=3) is None
    assert list(iter_clip_batches([record], num_frames=2, batch_size=1, augmentation=SMALL)) == []


def test_eval_clip_resizes_shorter_side_without_padding() -> None:
    frames = [np.zeros((96, 128, 3), np.uint8), np.zeros((96, 128, 3), np.uint8)]
    assert eval_clip(frames).shape == (2, 3, 360, 480)
    assert eval_clip(_record(num_frames=2), short_side=24).shape == (2, 3, 24, 32)
    tall = eval_clip([Image.new("RGB", (100, 333))], short_side=50)
    assert tall.shape == (1, 3, int(50 * 333 / 100), 50)


def _item_order(monkeypatch: pytest.MonkeyPatch, frames_per_video: list[int], shuffle_buffer: int) -> list[tuple]:
    """(video, anchor) of every item in the order iter_clip_batches draws them (sampling replaced by a marker)."""
    import seqformer.pipelines.collate as collate_module

    def marker(record: dict, *, anchor: int, **_: object) -> tuple:
        return torch.zeros(1), {"video_id": record["video_id"], "anchor": anchor}

    monkeypatch.setattr(collate_module, "make_sample", marker)
    records = [
        {"video_id": v, "num_instances": 1, "frames": [b""] * n, "dataset": "ytvis"}
        for v, n in enumerate(frames_per_video)
    ]
    batches = iter_clip_batches(
        records, num_frames=1, batch_size=1, items_per_video="per_frame", shuffle_buffer=shuffle_buffer, seed=3
    )
    return [(b["targets"][0]["video_id"], b["targets"][0]["anchor"]) for b in batches]


def test_shuffle_buffer_counts_records_and_a_full_buffer_permutes_the_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = [12, 7, 20, 9, 15, 11]
    everything = sorted((v, a) for v, n in enumerate(lengths) for a in range(n))
    in_order = _item_order(monkeypatch, lengths, shuffle_buffer=0)
    assert in_order == everything  # stream order, video by video
    full = _item_order(monkeypatch, lengths, shuffle_buffer=len(lengths))
    assert sorted(full) == everything and full != everything
    # a whole-epoch permutation: the first dozen items already come from most videos
    assert len({v for v, _ in full[:12]}) >= 4
    two = _item_order(monkeypatch, lengths, shuffle_buffer=2)
    assert sorted(two) == everything
    # never more than buffer + 1 videos open (started and not finished) at once: memory stays bounded
    last = {v: max(i for i, (w, _) in enumerate(two) if w == v) for v in range(len(lengths))}
    first = {v: min(i for i, (w, _) in enumerate(two) if w == v) for v in range(len(lengths))}
    open_counts = [sum(first[v] <= i <= last[v] for v in first) for i in range(len(two))]
    assert max(open_counts) == 3
    assert len({v for v, _ in two[:6]}) >= 2


def test_shared_batch_scale_gives_one_size_per_batch_on_every_worker() -> None:
    """``batch_scale_seed``: batch k resizes all its clips to one size from ``train_scales``, the same on two workers
    (different seeds, same batch_scale_seed); without it (official) clips draw their sizes one by one. No random
    crop here: a crop's aspect ratio can make the longer-side cap, not the scale, set the size."""
    records = [{**_record(), "video_id": v} for v in range(8)]
    config = dataclasses.replace(SMALL, crop_prob=0.0)

    def shorter_sides(seed: int, batch_scale_seed: int | None) -> list[list[int]]:
        batches = iter_clip_batches(records, num_frames=2, batch_size=3, augmentation=config, seed=seed,
                                    items_per_video="per_frame", shuffle_buffer=8, batch_scale_seed=batch_scale_seed)
        return [[min(clip.shape[-2:]) for clip in batch["clips"]] for batch in batches]

    worker0, worker1 = shorter_sides(0, 5), shorter_sides(1, 5)
    assert len(worker0) == len(worker1) == 16
    for first, second in zip(worker0, worker1):
        assert len(set(first + second)) == 1 and first[0] in SMALL.train_scales
    assert len({b[0] for b in worker0}) > 1  # the size changes from batch to batch
    assert shorter_sides(0, 6) != worker0  # and follows batch_scale_seed
    official = shorter_sides(0, None)
    assert any(len(set(sides)) > 1 for sides in official)


def test_given_scale_replaces_only_the_drawn_size() -> None:
    """A caller's scale equal to the size the clip would draw changes nothing (every other draw stays in step).
    No crop, so the drawn scale is the clip's height (48x64 frames, longer side below the cap)."""
    aug = ClipAugmentation(dataclasses.replace(SMALL, photometric=True, crop_prob=0.0))
    for seed in range(6):
        drawn = aug(sample_clip(_record(), 3, np.random.default_rng(seed)), np.random.default_rng(seed + 100))
        given = aug(sample_clip(_record(), 3, np.random.default_rng(seed)), np.random.default_rng(seed + 100),
                    scale=drawn.frames[0].size[1])
        other = aug(sample_clip(_record(), 3, np.random.default_rng(seed)), np.random.default_rng(seed + 100),
                    scale=56)
        assert [np.asarray(f).tobytes() for f in given.frames] == [np.asarray(f).tobytes() for f in drawn.frames]
        assert np.array_equal(given.boxes, drawn.boxes) and other.frames[0].size[1] == 56
