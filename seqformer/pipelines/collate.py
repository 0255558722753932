"""Collation into the model's :class:`~seqformer.types.ClipBatch`, and the per-worker training iterator.

:func:`iter_clip_batches` is what a Ray Train worker runs over its dataset shard (or what a Ray-free loop runs over
``clip_records.iter_records``): records → items (one per record per epoch, or one per frame with
``items_per_video="per_frame"``, the official epoch length) → :func:`~seqformer.pipelines.transforms.sample_clip`
→ :class:`~seqformer.pipelines.transforms.ClipAugmentation` → :func:`collate`. Each item's randomness is seeded by
``(seed, epoch, dataset, video_id, chunk, anchor, attempt)``, so a sample does not depend on the order in which
Ray delivers records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
import torch

from seqformer.pipelines.transforms import AugmentationConfig, ClipAugmentation, sample_clip, to_tensors
from seqformer.types import ClipBatch, ClipTarget

logger = logging.getLogger(__name__)

_DATASET_CODE = {"ytvis": 0, "coco": 1}
MAX_AUGMENTATION_ATTEMPTS = 10
"""Clips sampled and augmented per item before the item is skipped for having no instance left."""


def collate(samples: list[tuple[torch.Tensor, ClipTarget]]) -> ClipBatch:
    """Gather ``(frames [T, 3, H_i, W_i], target)`` samples into a :class:`ClipBatch` (no padding: sizes may differ)."""
    return {"clips": [s[0] for s in samples], "targets": [s[1] for s in samples]}


def item_rng(seed: int, epoch: int, record: dict[str, Any], anchor: int, attempt: int) -> np.random.Generator:
    """The generator of one training item; independent of record order."""
    key = [
        seed,
        epoch,
        _DATASET_CODE.get(str(record["dataset"]), 2),
        int(record["video_id"]),
        int(record.get("chunk") or 0),
        anchor + 1,
        attempt,
    ]
    return np.random.default_rng([abs(k) for k in key])


def make_sample(
    record: dict[str, Any],
    *,
    num_frames: int,
    augmentation: ClipAugmentation,
    seed: int,
    epoch: int = 0,
    anchor: int = -1,
    max_attempts: int = MAX_AUGMENTATION_ATTEMPTS,
    scale: int | None = None,
) -> tuple[torch.Tensor, ClipTarget] | None:
    """One training sample from a record, resampling the clip when augmentation removes every instance.

    Args:
        anchor: the item's frame (``per_frame`` epochs) or ``-1`` for a random one.
        scale: the multi-scale resize's shorter side (None: drawn per clip from ``train_scales``, as officially).

    Returns:
        ``(frames [T, 3, H, W] float32, target)`` or ``None`` after ``max_attempts`` empty clips.
    """
    for attempt in range(max_attempts):
        rng = item_rng(seed, epoch, record, anchor, attempt)
        clip = augmentation(sample_clip(record, num_frames, rng, None if anchor < 0 else anchor), rng, scale)
        if clip is not None:
            return to_tensors(clip)
    logger.debug(
        "video %s: no instance survived %d augmentation attempts; item skipped", record["video_id"], max_attempts
    )
    return None


def _take(
    pending: list[tuple[dict[str, Any], int]], open_records: dict[int, int], rng: np.random.Generator | None
) -> tuple[dict[str, Any], int]:
    """Remove and return a uniformly random pending item (the oldest without ``rng``)."""
    if rng is None:
        item = pending.pop(0)
    else:
        index = int(rng.integers(len(pending)))
        pending[index], pending[-1] = pending[-1], pending[index]
        item = pending.pop()
    key = id(item[0])
    open_records[key] -= 1
    if not open_records[key]:
        del open_records[key]
    return item


def iter_clip_batches(
    records: Iterable[dict[str, Any]],
    *,
    num_frames: int,
    batch_size: int,
    augmentation: ClipAugmentation | AugmentationConfig | None = None,
    seed: int = 0,
    epoch: int = 0,
    items_per_video: Literal["one", "per_frame"] = "one",
    shuffle_buffer: int = 0,
    drop_last: bool = True,
    batch_scale_seed: int | None = None,
) -> Iterator[ClipBatch]:
    """Training batches from a stream of clip records (one epoch).

    Args:
        records: rows from ``ray.train.get_dataset_shard("train").iter_rows()`` or ``clip_records.iter_records``.
        num_frames: frames per clip ``T``.
        batch_size: clips per batch.
        augmentation: a :class:`ClipAugmentation` or its config (default: the official recipe).
        seed: base seed (add the worker rank for distinct streams per worker).
        epoch: epoch number (changes every item's randomness).
        items_per_video: ``one`` item per record per epoch, or ``per_frame`` (official: one per annotated frame,
            with that frame as the anchor).
        shuffle_buffer: the number of records (videos) whose items are drawn from at random (0: stream order).
            Memory grows with it (the buffered records' encoded frames); a buffer as large as the worker's
            shard shuffles the whole epoch.
        drop_last: drop a final incomplete batch.
        batch_scale_seed: None (official): every clip draws its multi-scale size. Otherwise batch ``k`` of the epoch
            resizes all its clips to one size drawn from ``train_scales`` by a generator of ``(batch_scale_seed,
            epoch, k)``; give every worker the same value (the base seed, not base + rank) and batch ``k`` has one
            size on all of them.
    """
    if items_per_video not in ("one", "per_frame"):
        raise ValueError(f"items_per_video must be 'one' or 'per_frame', got {items_per_video!r}")
    aug = (
        augmentation
        if isinstance(augmentation, ClipAugmentation)
        else ClipAugmentation(augmentation or AugmentationConfig())
    )
    order_rng = np.random.default_rng([seed, epoch, 7])

    def items() -> Iterator[tuple[dict[str, Any], int]]:
        # A buffer of whole records: every item (record, anchor) of the buffered records is pending, and the next
        # item is drawn uniformly from all pending ones. A record leaves once its items are used and the next record
        # of the stream takes its place. With a buffer at least as large as the shard this is a full per-epoch
        # permutation of the items, as the official random sampler gives; smaller buffers still mix items of
        # ``shuffle_buffer`` different videos into every batch (an item buffer would mix only a few videos, since
        # one video yields one item per frame).
        pending: list[tuple[dict[str, Any], int]] = []
        open_records: dict[int, int] = {}  # id(record) -> its pending items
        for record in records:
            if not record["num_instances"]:
                continue
            anchors = range(len(record["frames"])) if items_per_video == "per_frame" else [-1]
            if not anchors:
                continue
            pending.extend((record, anchor) for anchor in anchors)
            open_records[id(record)] = len(anchors)
            while pending and len(open_records) > shuffle_buffer:
                yield _take(pending, open_records, order_rng if shuffle_buffer else None)
        while pending:
            yield _take(pending, open_records, order_rng)

    def batch_scale(index: int) -> int | None:
        if batch_scale_seed is None:
            return None
        scales = aug.config.train_scales
        return int(scales[int(np.random.default_rng([batch_scale_seed, epoch, index, 13]).integers(len(scales)))])

    batch: list[tuple[torch.Tensor, ClipTarget]] = []
    drawn = skipped = batches = 0
    scale = batch_scale(0)
    for record, anchor in items():
        drawn += 1
        sample = make_sample(
            record, num_frames=num_frames, augmentation=aug, seed=seed, epoch=epoch, anchor=anchor, scale=scale
        )
        if sample is None:
            skipped += 1
            continue
        batch.append(sample)
        if len(batch) == batch_size:
            yield collate(batch)
            batch = []
            batches += 1
            scale = batch_scale(batches)
    if batch and not drop_last:
        yield collate(batch)
    if skipped:
        # one line per epoch instead of one per item
        logger.info(
            "epoch %d: %d of %d items skipped (no instance left in the sampled clip after %d augmentation attempts; "
            "e.g. anchors in frames where every object is absent)", epoch, skipped, drawn, MAX_AUGMENTATION_ATTEMPTS,
        )
