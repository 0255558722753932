"""COCO pseudo clips (official joint training): one image → ``T`` frames of randomly warped copies.

Frame 0 is the original; every other copy gets its own random transform in the spirit of the official imgaug
recipe: brightness add ±40 and/or hue-saturation shift ±5 (at least one), a perspective warp (corner jitter with
std 0.08 of the side), an affine warp (translate ±10 %, rotate ±20°, bilinear) and, with p 0.25, a motion blur of
kernel 9 or 11. Masks get the same geometry (nearest). The frames are shuffled and boxes recomputed from the masks;
instance-frames whose mask vanished get the zero box and ``valid = False``. The YouTube-VIS geometric pipeline
(without photometric distortion) follows in :class:`~seqformer.pipelines.transforms.ClipAugmentation`.

Deviation: implemented with torchvision/PIL/numpy ops rather than imgaug, so warps match in distribution, not bit
for bit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from seqformer.pipelines.clip_records import record_labels, record_masks
from seqformer.pipelines.masks import mask_to_box
from seqformer.pipelines.transforms import RawClip
from seqformer.pipelines.video_io import decode_image


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness add ±40 and/or hue-saturation shift ±5 (at least one of them). ``image`` uint8 ``[H, W, 3]``."""
    mode = int(rng.integers(3))  # 0 brightness, 1 hue/saturation, 2 both
    out = image.astype(np.float32)
    if mode in (0, 2):
        out = out + rng.uniform(-40, 40)
    if mode in (1, 2):
        hsv = np.asarray(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).convert("HSV"), dtype=np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-5, 5)) % 256  # PIL hue is 0..255
        hsv[..., 1] = hsv[..., 1] + rng.uniform(-5, 5)
        out = np.asarray(Image.fromarray(np.clip(hsv, 0, 255).astype(np.uint8), "HSV").convert("RGB"), np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _motion_blur(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Blur a float ``[3, H, W]`` image along a random direction with a line kernel of size 9 or 11."""
    size = int(rng.choice([9, 11]))
    angle = rng.uniform(0, math.pi)
    kernel = np.zeros((size, size), dtype=np.float32)
    centre = (size - 1) / 2
    for step in np.linspace(-centre, centre, 4 * size):
        kernel[int(round(centre + step * math.sin(angle))), int(round(centre + step * math.cos(angle)))] = 1.0
    weight = torch.from_numpy(kernel / kernel.sum()).expand(3, 1, size, size)
    padded = F.pad(image[None], [size // 2] * 4, mode="replicate")
    return F.conv2d(padded, weight, groups=3)[0]


def _warp(image: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random perspective + affine warp on an image ``[3, H, W]`` (bilinear) and masks ``[N, H, W]`` (nearest)."""
    height, width = image.shape[-2:]
    corners = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    jitter = rng.normal(0, 0.08, size=(4, 2)) * np.array([width, height])
    moved = [[int(round(x + dx)), int(round(y + dy))] for (x, y), (dx, dy) in zip(corners, jitter)]
    angle = float(rng.uniform(-20, 20))
    shift = [int(round(rng.uniform(-0.1, 0.1) * width)), int(round(rng.uniform(-0.1, 0.1) * height))]
    image = TF.perspective(image, corners, moved, interpolation=InterpolationMode.BILINEAR)
    image = TF.affine(
        image, angle=angle, translate=shift, scale=1.0, shear=[0.0], interpolation=InterpolationMode.BILINEAR
    )
    if masks.shape[0]:
        masks = TF.perspective(masks, corners, moved, interpolation=InterpolationMode.NEAREST)
        masks = TF.affine(
            masks, angle=angle, translate=shift, scale=1.0, shear=[0.0], interpolation=InterpolationMode.NEAREST
        )
    return image, masks


def coco_pseudo_clip(record: dict[str, Any], num_frames: int, rng: np.random.Generator) -> RawClip:
    """Turn a one-frame COCO record into a ``num_frames`` pseudo clip (see the module docstring).

    Returns:
        :class:`RawClip` at the stored size; ``frame_ids`` are all 0.
    """
    base = np.asarray(decode_image(bytes(record["frames"][0]), f"coco image {record['video_id']}"))
    base_masks = record_masks(record)[:, 0]  # [N, H, W]
    frames, masks = [base], [base_masks]
    for _ in range(num_frames - 1):
        image = torch.from_numpy(_photometric(base, rng)).permute(2, 0, 1).float()  # [3, H, W]
        image, warped = _warp(image, torch.from_numpy(base_masks.astype(np.uint8)), rng)
        if rng.random() < 0.25:
            image = _motion_blur(image, rng)
        frames.append(image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
        masks.append(warped.numpy().astype(bool))
    order = rng.permutation(num_frames)
    stacked = np.stack([masks[i] for i in order], axis=1)  # [N, T, H, W]
    boxes = (
        np.stack([[mask_to_box(m) for m in inst] for inst in stacked])
        if len(stacked)
        else np.zeros((0, num_frames, 4), np.float32)
    )
    return RawClip(
        frames=[Image.fromarray(frames[i]) for i in order],
        masks=stacked,
        boxes=boxes.astype(np.float32),
        valid=stacked.any(axis=(2, 3)),
        labels=record_labels(record),
        frame_ids=np.zeros(num_frames, dtype=np.int64),
        video_id=int(record["video_id"]),
        orig_size=(int(record["height"]), int(record["width"])),
        dataset="coco",
    )
