"""Synthetic moving-shapes data in the exact YouTube-VIS layout (and a COCO-layout image set) for the demo and tests.

Each video shows 1–5 textured shapes over a noisy, non-uniform background. Categories differ by *shape* only
(circle, square, triangle, star, cross, ring); colours and textures are drawn from the same distribution for every
category, and the background carries blobs of similar colours as distractors, so no colour threshold separates
the classes. Objects move, rotate, change scale, enter and leave the frame and occlude each other (a random depth
order); the annotated masks are the *visible* parts, as in YouTube-VIS. Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from seqformer.pipelines.masks import mask_to_box, rle_dict
from seqformer.pipelines.video_io import write_video

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring")
MIN_VISIBLE_PIXELS = 6
"""Instance-frames with fewer visible pixels are annotated as absent (``null``)."""


def categories(num_categories: int = 4) -> list[dict[str, Any]]:
    """``[{id, name}]`` of the first ``num_categories`` shapes (ids start at 1)."""
    if not 1 <= num_categories <= len(SHAPES):
        raise ValueError(f"num_categories must be in 1..{len(SHAPES)}, got {num_categories}")
    return [{"id": i + 1, "name": SHAPES[i], "supercategory": "shape"} for i in range(num_categories)]


def _outline(shape: str, cx: float, cy: float, radius: float, angle: float) -> list[list[tuple[float, float]]]:
    """Polygons (outer first; a second one is a hole) of a shape of circumradius ``radius``."""

    def ring(n: int, r: float, phase: float = 0.0) -> list[tuple[float, float]]:
        return [
            (
                cx + r * math.cos(angle + phase + 2 * math.pi * k / n),
                cy + r * math.sin(angle + phase + 2 * math.pi * k / n),
            )
            for k in range(n)
        ]

    if shape == "circle":
        return [ring(32, radius)]
    if shape == "square":
        return [ring(4, radius, math.pi / 4)]
    if shape == "triangle":
        return [ring(3, radius, -math.pi / 2)]
    if shape == "star":
        outer, inner = ring(5, radius, -math.pi / 2), ring(5, radius * 0.45, -math.pi / 2 + math.pi / 5)
        return [[p for pair in zip(outer, inner) for p in pair]]
    if shape == "cross":
        arm = 0.36 * radius
        local = [
            (arm, radius),
            (arm, arm),
            (radius, arm),
            (radius, -arm),
            (arm, -arm),
            (arm, -radius),
            (-arm, -radius),
            (-arm, -arm),
            (-radius, -arm),
            (-radius, arm),
            (-arm, arm),
            (-arm, radius),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [[(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]]
    if shape == "ring":
        return [ring(32, radius), ring(32, radius * 0.55)]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _shape_mask(shape: str, cx: float, cy: float, radius: float, angle: float, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    polygons = _outline(shape, cx, cy, radius, angle)
    draw.polygon(polygons[0], fill=1)
    for hole in polygons[1:]:
        draw.polygon(hole, fill=0)
    return np.asarray(canvas, dtype=bool)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1] ``[height, width]`` (bilinear upsampling of a coarse random grid)."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(20, 235, size=3).astype(np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """float32 ``[H, W, 3]``: a two-colour gradient, low-frequency noise and blobs of object-like colours."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(theta) + ys * math.sin(theta)) / max(height, width)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = _random_colour(rng) * (1 - ramp[..., None]) + _random_colour(rng) * ramp[..., None]
    image += (_smooth_noise(rng, height, width, 6)[..., None] - 0.5) * rng.uniform(30, 80)
    for _ in range(int(rng.integers(1, 4))):  # amorphous distractor blobs in object-like colours
        blob = _smooth_noise(rng, height, width, int(rng.integers(3, 6))) > rng.uniform(0.7, 0.8)
        image[blob] = image[blob] * 0.3 + _random_colour(rng) * 0.7
    return image


def _texture(rng: np.random.Generator) -> dict[str, Any]:
    kind = rng.choice(["solid", "stripes", "checker"])
    return {
        "kind": str(kind),
        "colour": _random_colour(rng),
        "colour2": _random_colour(rng),
        "period": float(rng.uniform(4, 10)),
        "stripe_angle": float(rng.uniform(0, math.pi)),
    }


def _paint(texture: dict[str, Any], cx: float, cy: float, angle: float, height: int, width: int) -> np.ndarray:
    """float32 ``[H, W, 3]`` texture in the object's own coordinates (it moves and turns with the object)."""
    if texture["kind"] == "solid":
        return np.broadcast_to(texture["colour"], (height, width, 3))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xs - cx) * math.cos(angle + texture["stripe_angle"]) + (ys - cy) * math.sin(angle + texture["stripe_angle"])
    v = -(xs - cx) * math.sin(angle + texture["stripe_angle"]) + (ys - cy) * math.cos(angle + texture["stripe_angle"])
    if texture["kind"] == "stripes":
        weight = (np.sin(2 * math.pi * u / texture["period"]) > 0).astype(np.float32)
    else:  # soft checker pattern
        weight = 0.5 + 0.5 * np.sin(2 * math.pi * u / texture["period"]) * np.cos(2 * math.pi * v / texture["period"])
    return texture["colour"] * (1 - weight[..., None]) + texture["colour2"] * weight[..., None]


def _object_track(rng: np.random.Generator, num_frames: int, height: int, width: int, shape: str) -> dict[str, Any]:
    side = min(height, width)
    size0 = rng.uniform(0.15, 0.45) * side  # diameter
    growth = rng.uniform(-0.4, 0.4)
    entering = rng.random() < 0.3
    speed = rng.uniform(0.3, 2.0) * side / 40
    direction = rng.uniform(0, 2 * math.pi)
    vx, vy = speed * math.cos(direction), speed * math.sin(direction)
    if entering:  # start outside the frame, heading in
        x0 = -size0 / 2 if vx > 0 else width + size0 / 2
        y0 = rng.uniform(0.2, 0.8) * height
    else:
        x0, y0 = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
    return {
        "shape": shape,
        "x0": x0,
        "y0": y0,
        "vx": vx,
        "vy": vy,
        "size0": size0,
        "growth": growth,
        "angle0": rng.uniform(0, 2 * math.pi),
        "spin": rng.uniform(-0.15, 0.15),
        "texture": _texture(rng),
    }


def _render_video(
    rng: np.random.Generator, num_frames: int, height: int, width: int, cats: list[dict[str, Any]]
) -> tuple[list[np.ndarray], list[dict[str, Any]], list[list[np.ndarray | None]]]:
    """Frames uint8 ``[H, W, 3]``, object tracks (back to front) and per-object per-frame visible masks."""
    background = _background(rng, height, width)
    drift = rng.uniform(-0.5, 0.5, size=2)
    tracks = [
        _object_track(rng, num_frames, height, width, str(rng.choice([c["name"] for c in cats])))
        for _ in range(int(rng.integers(1, 6)))
    ]
    for k in range(1, len(tracks)):  # make crossings (occlusions) common: aim some objects at an earlier one
        if rng.random() < 0.6:
            other, meet = tracks[int(rng.integers(k))], rng.uniform(0.3, 0.7) * (num_frames - 1)
            tracks[k]["x0"] = other["x0"] + (other["vx"] - tracks[k]["vx"]) * meet + rng.normal(0, 0.1) * width
            tracks[k]["y0"] = other["y0"] + (other["vy"] - tracks[k]["vy"]) * meet + rng.normal(0, 0.1) * height
    frames, visible = [], [[] for _ in tracks]
    for t in range(num_frames):
        shift = np.roll(background, (int(drift[0] * t), int(drift[1] * t)), axis=(0, 1))
        image = shift + rng.normal(0, 6, size=shift.shape).astype(np.float32)
        shapes = []
        for track in tracks:  # back to front
            cx, cy = track["x0"] + track["vx"] * t, track["y0"] + track["vy"] * t
            radius = track["size0"] / 2 * (1 + track["growth"] * t / max(1, num_frames - 1))
            angle = track["angle0"] + track["spin"] * t
            mask = _shape_mask(track["shape"], cx, cy, radius, angle, height, width)
            image[mask] = _paint(track["texture"], cx, cy, angle, height, width)[mask]
            shapes.append(mask)
        for k, mask in enumerate(shapes):
            front = np.zeros_like(mask)
            for other in shapes[k + 1 :]:
                front |= other
            vis = mask & ~front
            tracks[k].setdefault("occluded_pixels", []).append(int((mask & front).sum()))
            visible[k].append(vis if vis.sum() >= MIN_VISIBLE_PIXELS else None)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames, tracks, visible


def _save_jpeg(array: np.ndarray, path: Path, quality: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="JPEG", quality=quality)


def generate_ytvis(
    out_dir: str | Path,
    num_videos: int,
    height: int = 96,
    width: int = 96,
    min_frames: int = 10,
    max_frames: int = 40,
    seed: int = 0,
    num_categories: int = 4,
    annotations_name: str = "annotations.json",
) -> Path:
    """Write a YouTube-VIS-layout dataset: ``out_dir/JPEGImages/<video>/<00000>.jpg`` and ``out_dir/<annotations>``.

    Video folders are named ``video_<seed>_<index>``, so splits with different seeds can share one ``JPEGImages``.
    ``annotations_name`` may be an absolute path to put the JSON elsewhere.

    Returns:
        Path of the annotation JSON (videos, annotations with compressed-RLE ``segmentations``, ``bboxes``
        ``[x, y, w, h]`` and ``areas``, ``null`` where an object is not visible; categories).
    """
    if not 1 <= min_frames <= max_frames:
        raise ValueError(f"need 1 <= min_frames <= max_frames, got min_frames={min_frames}, max_frames={max_frames}")
    out = Path(out_dir)
    cats = categories(num_categories)
    name_to_id = {c["name"]: c["id"] for c in cats}
    videos, annotations = [], []
    for index in range(num_videos):
        rng = np.random.default_rng([seed, index])
        num_frames = int(rng.integers(min_frames, max_frames + 1))
        frames, tracks, visible = _render_video(rng, num_frames, height, width, cats)
        name = f"video_{seed}_{index:05d}"
        file_names = [f"{name}/{t:05d}.jpg" for t in range(num_frames)]
        for t, frame in enumerate(frames):
            _save_jpeg(frame, out / "JPEGImages" / file_names[t])
        video_id = index + 1
        videos.append(
            {"id": video_id, "width": width, "height": height, "length": num_frames, "file_names": file_names}
        )
        for track, masks in zip(tracks, visible):
            if all(m is None for m in masks):
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "video_id": video_id,
                    "category_id": name_to_id[track["shape"]],
                    "iscrowd": 0,
                    "height": height,
                    "width": width,
                    "segmentations": [rle_dict(m) if m is not None else None for m in masks],
                    "bboxes": [_xywh(m) if m is not None else None for m in masks],
                    "areas": [float(m.sum()) if m is not None else None for m in masks],
                }
            )
    path = out / annotations_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "info": {"description": f"synthetic moving shapes, seed {seed}"},
                "videos": videos,
                "annotations": annotations,
                "categories": cats,
            }
        )
    )
    logger.info("synthetic YouTube-VIS: %d videos, %d instances -> %s", len(videos), len(annotations), path)
    return path


def _xywh(mask: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = mask_to_box(mask).tolist()
    return [x1, y1, x2 - x1, y2 - y1]


def generate_coco(
    out_dir: str | Path, num_images: int, height: int = 96, width: int = 96, seed: int = 0, num_categories: int = 4
) -> Path:
    """Write a COCO-layout image set: ``out_dir/train2017/<id>.jpg`` + ``annotations/instances_train2017.json``.

    Segmentations are compressed RLE of the visible part; category ids are the synthetic shape ids.
    """
    out = Path(out_dir)
    cats = categories(num_categories)
    name_to_id = {c["name"]: c["id"] for c in cats}
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, 1_000_003, index])
        frames, tracks, visible = _render_video(rng, 1, height, width, cats)
        image_id = index + 1
        file_name = f"{image_id:012d}.jpg"
        _save_jpeg(frames[0], out / "train2017" / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for track, masks in zip(tracks, visible):
            if masks[0] is None:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": name_to_id[track["shape"]],
                    "iscrowd": 0,
                    "segmentation": rle_dict(masks[0]),
                    "bbox": _xywh(masks[0]),
                    "area": float(masks[0].sum()),
                }
            )
    path = out / "annotations" / "instances_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Helpers for inference tests and bad-input tests


def write_mp4(video_dir: str | Path, out_path: str | Path, fps: int = 10) -> Path:
    """Encode the frames of a YouTube-VIS video folder into an mp4 (PyAV), e.g. for inference tests."""
    files = sorted(Path(video_dir).glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no .jpg frames in {video_dir}")
    frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return write_video(out_path, frames, fps=fps)


def corrupt_truncate(path: str | Path, keep_fraction: float = 0.5) -> None:
    """Truncate an image file to a fraction of its bytes (a torn write)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])


def corrupt_garbage(path: str | Path, seed: int = 0) -> None:
    """Replace an image file's content with random bytes of the same length."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(path.stat().st_size))
