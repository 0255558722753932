"""Clip sampling and clip-consistent augmentation (official SeqFormer recipe), plus inference preprocessing.

Flow per training item: :func:`sample_clip` (frame indices by the official rule, decode those frames, targets at
the stored size; COCO one-frame records become pseudo clips) → :class:`ClipAugmentation` (same geometry for every
frame of a clip, photometric distortion per frame) → ``collate.collate``. All randomness comes from the
``numpy.random.Generator`` passed in, so a fixed seed gives the same clip.

A :class:`RawClip` is the intermediate form: frames as PIL RGB images and targets as numpy arrays with ``xyxy``
boxes in pixels of the current frame size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from seqformer.pipelines.clip_records import record_boxes, record_labels, record_masks, record_valid
from seqformer.pipelines.masks import resize_mask_nearest
from seqformer.pipelines.video_io import decode_image
from seqformer.types import ClipTarget

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BOX_EPS = 1e-6
"""Official ``clamp(min=1e-6)`` of normalised boxes (absent frames end up as 1e-6 boxes)."""


@dataclass
class RawClip:
    """A clip of ``T`` frames and ``N`` instances between sampling and tensor conversion.

    Attributes:
        frames: ``T`` PIL RGB images of equal size ``W x H``.
        masks: bool ``[N, T, H, W]``.
        boxes: float32 ``[N, T, 4]`` xyxy in pixels (zeros where absent).
        valid: bool ``[N, T]``.
        labels: int64 ``[N]`` category ids.
        frame_ids: int64 ``[T]`` frame indices in the source video.
        video_id: source video (or COCO image) id.
        orig_size: ``(h, w)`` of the original frames.
        dataset: ``ytvis`` or ``coco``.
    """

    frames: list[Image.Image]
    masks: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    labels: np.ndarray
    frame_ids: np.ndarray
    video_id: int
    orig_size: tuple[int, int]
    dataset: str = "ytvis"


@dataclass(frozen=True)
class AugmentationConfig:
    """Training augmentation (fields mirror ``data:`` in the experiment config; defaults are the official recipe)."""

    train_scales: tuple[int, ...] = (288, 320, 352, 392, 416, 448, 480, 512)
    """Shorter-side sizes of the multi-scale resize."""
    max_train_size: int = 768
    """Longer-side cap of the multi-scale resize."""
    crop_scales: tuple[int, ...] = (400, 500, 600)
    """Shorter-side sizes before the random crop."""
    crop_min: int = 384
    """Smallest crop side (clamped to the image side)."""
    crop_max: int = 600
    """Largest crop side."""
    crop_prob: float = 0.5
    """Probability of the resize + random-crop branch (official 0.5); otherwise only the multi-scale resize."""
    photometric: bool = True
    """Per-frame photometric distortion (YouTube-VIS clips only, as officially)."""
    hflip: bool = True
    """Random horizontal flip with p 0.5."""
    photometric_overflow: Literal["wrap", "clip"] = "wrap"
    """Official code casts to uint8 without clipping (values wrap); ``clip`` saturates instead."""


# ------------------------------------------------------------------------------------------------ sampling


def sample_frame_indices(
    length: int, num_frames: int, rng: np.random.Generator, anchor: int | None = None
) -> list[int]:
    """Official frame-sampling rule for one item ``(video, anchor)``; sorted, duplicates possible.

    ``[f, max(0, f - U{1..3}), min(len - 1, f + U{1..3})]`` plus ``T - 3`` global frames drawn without replacement
    from ``frames[:min] + frames[max:]`` (falling back to the whole video, then to repeats, when too short). For
    ``T < 3`` (tiny demo configs) the local window is cut: ``T = 1`` → ``[f]``; ``T = 2`` → ``f`` and one neighbour.
    """
    if length < 1 or num_frames < 1:
        raise ValueError(f"need length >= 1 and num_frames >= 1, got length={length}, num_frames={num_frames}")
    f = int(rng.integers(length)) if anchor is None else int(anchor)
    before = max(0, f - int(rng.integers(1, 4)))
    after = min(length - 1, f + int(rng.integers(1, 4)))
    if num_frames == 1:
        return [f]
    if num_frames == 2:
        return sorted([f, before if rng.random() < 0.5 else after])
    indices = [f, before, after]
    extra = num_frames - 3
    if extra > 0:
        pool = list(range(0, min(indices))) + list(range(max(indices), length))
        if len(pool) > extra:
            indices += [pool[i] for i in rng.choice(len(pool), extra, replace=False)]
        elif length >= extra:
            indices += [int(i) for i in rng.choice(length, extra, replace=False)]
        else:
            indices += list(range(length)) + [int(i) for i in rng.choice(length, extra - length, replace=True)]
    return sorted(indices)


def sample_clip(
    record: dict[str, Any], num_frames: int, rng: np.random.Generator, anchor: int | None = None
) -> RawClip:
    """Sample a training clip of ``num_frames`` frames from a clip record (only the sampled frames are decoded).

    Args:
        record: a clip record (``clip_records.RECORD_SCHEMA`` keys) as pyarrow or Ray Data yields it.
        num_frames: ``T``.
        rng: source of all randomness.
        anchor: the item's frame ``f`` (``per_frame`` epochs); random when ``None``.

    Returns:
        A :class:`RawClip` at the stored size; COCO records become pseudo clips (:func:`coco_pseudo_clip`).
    """
    if record["dataset"] == "coco":
        from seqformer.pipelines.pseudo_clips import coco_pseudo_clip  # imports this module

        return coco_pseudo_clip(record, num_frames, rng)
    indices = sample_frame_indices(len(record["frames"]), num_frames, rng, anchor)
    frames = [decode_image(bytes(record["frames"][i]), f"video {record['video_id']} frame {i}") for i in indices]
    source_ids = np.asarray(record.get("frame_ids") or range(len(record["frames"])), dtype=np.int64)
    return RawClip(
        frames=frames,
        masks=record_masks(record)[:, indices],
        boxes=record_boxes(record)[:, indices],
        valid=record_valid(record)[:, indices],
        labels=record_labels(record),
        frame_ids=source_ids[indices],
        video_id=int(record["video_id"]),
        orig_size=(int(record["height"]), int(record["width"])),
        dataset=str(record["dataset"]),
    )


# ------------------------------------------------------------------------------------------------ geometry


def resize_size(width: int, height: int, short: int, max_size: int | None) -> tuple[int, int]:
    """``(w, h)`` after resizing the shorter side to ``short``, longer side capped at ``max_size`` (DETR rule)."""
    lo, hi = min(width, height), max(width, height)
    if max_size is not None and hi / lo * short > max_size:
        short = int(round(max_size * lo / hi))
    if (width <= height and width == short) or (height <= width and height == short):
        return width, height
    if width < height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _resize(clip: RawClip, short: int, max_size: int | None) -> None:
    width, height = clip.frames[0].size
    new_w, new_h = resize_size(width, height, short, max_size)
    if (new_w, new_h) == (width, height):
        return
    clip.frames = [f.resize((new_w, new_h), Image.BILINEAR) for f in clip.frames]
    clip.masks = resize_mask_nearest(clip.masks, new_h, new_w)
    clip.boxes = clip.boxes * np.array([new_w / width, new_h / height] * 2, dtype=np.float32)


def _crop(clip: RawClip, top: int, left: int, height: int, width: int) -> None:
    clip.frames = [f.crop((left, top, left + width, top + height)) for f in clip.frames]
    clip.masks = clip.masks[..., top : top + height, left : left + width]
    boxes = clip.boxes - np.array([left, top, left, top], dtype=np.float32)
    boxes[..., 0::2] = boxes[..., 0::2].clip(0, width)
    boxes[..., 1::2] = boxes[..., 1::2].clip(0, height)
    clip.boxes = boxes


def _hflip(clip: RawClip) -> None:
    width = clip.frames[0].size[0]
    clip.frames = [f.transpose(Image.FLIP_LEFT_RIGHT) for f in clip.frames]
    clip.masks = clip.masks[..., ::-1].copy()
    boxes = clip.boxes.copy()
    boxes[..., 0], boxes[..., 2] = width - clip.boxes[..., 2], width - clip.boxes[..., 0]
    clip.boxes = np.where(clip.valid[..., None], boxes, 0.0).astype(np.float32)


def _drop_degenerate(clip: RawClip) -> None:
    """Zero degenerate instance-frames and drop instances degenerate in every frame (official).

    Deviation: an instance-frame whose mask became empty (a sub-pixel sliver after crop + nearest resize) also
    counts as degenerate; the official code keeps its sliver box next to an empty mask.
    """
    keep_frames = (clip.boxes[..., 2] > clip.boxes[..., 0]) & (clip.boxes[..., 3] > clip.boxes[..., 1]) & clip.valid
    keep_frames &= clip.masks.any(axis=(-2, -1))
    clip.boxes = np.where(keep_frames[..., None], clip.boxes, 0.0).astype(np.float32)
    clip.masks = clip.masks & keep_frames[..., None, None]
    clip.valid = keep_frames
    keep = keep_frames.any(axis=1)
    clip.masks, clip.boxes, clip.valid, clip.labels = (
        clip.masks[keep],
        clip.boxes[keep],
        clip.valid[keep],
        clip.labels[keep],
    )


# ------------------------------------------------------------------------------------------------ photometric


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc, minc = rgb.max(-1), rgb.min(-1)
    delta = maxc - minc
    safe = np.where(delta == 0, 1.0, delta)
    hue = np.where(maxc == r, ((g - b) / safe) % 6, np.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(delta == 0, 0.0, hue * 60.0)
    sat = np.where(maxc != 0, delta / np.where(maxc == 0, 1.0, maxc), 0.0)
    return np.stack([hue, sat, maxc], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    chroma = val * sat
    sector = (hue / 60.0) % 6
    x = chroma * (1 - np.abs(sector % 2 - 1))
    zero = np.zeros_like(chroma)
    idx = np.floor(sector).astype(np.int64).clip(0, 5)
    table = [
        (chroma, x, zero),
        (x, chroma, zero),
        (zero, chroma, x),
        (zero, x, chroma),
        (x, zero, chroma),
        (chroma, zero, x),
    ]
    out = np.zeros(hsv.shape, dtype=np.float32)
    for k, (rr, gg, bb) in enumerate(table):
        sel = idx == k
        out[..., 0] = np.where(sel, rr, out[..., 0])
        out[..., 1] = np.where(sel, gg, out[..., 1])
        out[..., 2] = np.where(sel, bb, out[..., 2])
    return out + (val - chroma)[..., None]


def photometric_distort(image: Image.Image, rng: np.random.Generator, overflow: str = "wrap") -> Image.Image:
    """SSD-style distortion of one frame: brightness ±32, contrast 0.5–1.5 (before or after the HSV part),
    saturation 0.5–1.5, hue ±18°, random channel swap, each with p 0.5, computed in float."""
    x = np.asarray(image, dtype=np.float32)
    if rng.random() < 0.5:
        x = x + rng.uniform(-32, 32)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        x = x * rng.uniform(0.5, 1.5)
    hsv = _rgb_to_hsv(x)
    if rng.random() < 0.5:
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-18, 18)) % 360.0
    x = _hsv_to_rgb(hsv)
    if not contrast_first and rng.random() < 0.5:
        x = x * rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        x = x[..., rng.permutation(3)]
    if overflow == "wrap":  # what a C cast of out-of-range floats to uint8 does in the official code
        out = (np.trunc(x).astype(np.int64) % 256).astype(np.uint8)
    else:
        out = np.clip(x, 0, 255).astype(np.uint8)
    return Image.fromarray(out)


# ------------------------------------------------------------------------------------------------ pipeline


class ClipAugmentation:
    """Clip-consistent training augmentation (official recipe, see the reference doc §11).

    Horizontal flip (p 0.5) → per-frame photometric distortion (YouTube-VIS only) → either a multi-scale resize,
    or (with p ``crop_prob``, officially 0.5) resize to a crop scale + random crop (same for all frames) +
    multi-scale resize →
    drop degenerate instance-frames / instances.
    """

    def __init__(self, config: AugmentationConfig = AugmentationConfig()) -> None:
        self.config = config

    def __call__(self, clip: RawClip, rng: np.random.Generator, scale: int | None = None) -> RawClip | None:
        """Augment in place; returns the clip, or ``None`` when no instance survives (the caller resamples).

        ``scale``: the multi-scale resize's shorter side, chosen by the caller (a size shared by a batch) instead of
        drawn from ``train_scales``; the draw is made all the same, so the other draws stay in step.
        """
        cfg = self.config
        if cfg.hflip and rng.random() < 0.5:
            _hflip(clip)
        if cfg.photometric and clip.dataset != "coco":
            clip.frames = [photometric_distort(f, rng, cfg.photometric_overflow) for f in clip.frames]
        if rng.random() < cfg.crop_prob:  # one draw whatever crop_prob is, so the other draws stay in step
            _resize(clip, int(rng.choice(cfg.crop_scales)), None)
            width, height = clip.frames[0].size
            crop_w = int(rng.integers(min(cfg.crop_min, width), min(width, cfg.crop_max) + 1))
            crop_h = int(rng.integers(min(cfg.crop_min, height), min(height, cfg.crop_max) + 1))
            top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
            _crop(clip, top, left, crop_h, crop_w)
        drawn = int(rng.choice(cfg.train_scales))
        _resize(clip, drawn if scale is None else int(scale), cfg.max_train_size)
        _drop_degenerate(clip)
        return clip if len(clip.labels) else None


def to_tensors(clip: RawClip) -> tuple[torch.Tensor, ClipTarget]:
    """ImageNet-normalised float32 frames ``[T, 3, H, W]`` and a :class:`~seqformer.types.ClipTarget`.

    Boxes become cxcywh normalised by the clip size and clamped to ``>= 1e-6`` (absent frames → 1e-6 boxes).
    """
    images = _normalise([np.asarray(f) for f in clip.frames])
    height, width = images.shape[-2:]
    boxes = clip.boxes / np.array([width, height, width, height], dtype=np.float32)
    cxcywh = np.stack(
        [
            (boxes[..., 0] + boxes[..., 2]) / 2,
            (boxes[..., 1] + boxes[..., 3]) / 2,
            boxes[..., 2] - boxes[..., 0],
            boxes[..., 3] - boxes[..., 1],
        ],
        -1,
    )
    target: ClipTarget = {
        "labels": torch.as_tensor(clip.labels, dtype=torch.int64),
        "boxes": torch.as_tensor(cxcywh, dtype=torch.float32).clamp(min=BOX_EPS),
        "masks": torch.as_tensor(np.ascontiguousarray(clip.masks), dtype=torch.bool),
        "valid": torch.as_tensor(clip.valid, dtype=torch.bool),
        "size": torch.tensor([height, width], dtype=torch.int64),
        "orig_size": torch.tensor(clip.orig_size, dtype=torch.int64),
        "video_id": clip.video_id,
        "frame_ids": torch.as_tensor(clip.frame_ids, dtype=torch.int64),
    }
    return images, target


def _normalise(frames: list[np.ndarray]) -> torch.Tensor:
    array = np.stack(frames).astype(np.float32) / 255.0  # [T, H, W, 3]
    array = (array - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))  # [T, 3, H, W]


def eval_clip(frames: Any, short_side: int = 360) -> torch.Tensor:
    """Inference preprocessing (official): resize each frame's shorter side to ``short_side`` (torchvision
    ``Resize(360)`` semantics: longer side ``int(short_side * long / short)``, no cap), ImageNet-normalise, no padding.

    Args:
        frames: a clip record (its ``frames`` are decoded), or a sequence of encoded bytes, PIL images or uint8
            ``[H, W, 3]`` arrays.
        short_side: target shorter side.

    Returns:
        float32 ``[T, 3, h, w]``.
    """
    items = frames["frames"] if isinstance(frames, dict) else frames
    images = []
    for i, item in enumerate(items):
        if isinstance(item, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(item), f"frame {i}")
        elif isinstance(item, Image.Image):
            image = item.convert("RGB")
        else:
            image = Image.fromarray(np.asarray(item, dtype=np.uint8))
        width, height = image.size
        new_w, new_h = resize_size(width, height, short_side, None)
        images.append(
            np.asarray(image.resize((new_w, new_h), Image.BILINEAR) if (new_w, new_h) != (width, height) else image)
        )
    if not images:
        raise ValueError("eval_clip: got no frames")
    return _normalise(images)
