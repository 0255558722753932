"""Glue between the experiment config and the pipelines: preparing data, training batches, validation.

The pipelines know nothing of the experiment schema; this module maps ``ExperimentConfig.data`` onto their options.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from seqformer.platform.config import ExperimentConfig

logger = logging.getLogger(__name__)


def ensure_synthetic(exp: ExperimentConfig) -> None:
    """Generate the synthetic train / val sets of a ``data.dataset: synthetic`` experiment when missing."""
    from seqformer.pipelines.synthetic import generate_ytvis

    syn = exp.data.synthetic
    splits = [
        (exp.data.root, exp.data.train_annotations, syn.train_videos, syn.seed),
        (exp.data.val_root or exp.data.root, exp.data.val_annotations, syn.val_videos, syn.seed + 1),
    ]
    for root, ann_path, count, seed in splits:
        if not root or not ann_path:
            continue
        if Path(ann_path).is_file():
            continue
        logger.info("generating %d synthetic videos (seed %d) under %s", count, seed, root)
        generated = generate_ytvis(
            root, count, height=syn.height, width=syn.width, min_frames=syn.min_frames, max_frames=syn.max_frames,
            seed=seed, num_categories=max(1, exp.model.num_classes - 1),
            annotations_name=Path(ann_path).name,
        )
        if generated.resolve() != Path(ann_path).resolve():
            raise ValueError(
                f"data.train_annotations / data.val_annotations of a synthetic experiment must sit directly in "
                f"data.root / data.val_root; got {ann_path} for root {root}"
            )


def prepare_sources(exp: ExperimentConfig) -> list[Any]:
    from seqformer.pipelines.prepare import Source

    if not exp.data.root or not exp.data.train_annotations:
        raise ValueError(
            "data.root and data.train_annotations must be set to prepare training data "
            f"(got root={exp.data.root!r}, train_annotations={exp.data.train_annotations!r})"
        )
    sources = [Source("ytvis", exp.data.train_annotations, exp.data.root)]
    if exp.data.joint_coco:
        mapping = "ytvis21" if exp.data.dataset == "ytvis21" else "ytvis19"
        sources.append(Source("coco", str(exp.data.coco_annotations), str(exp.data.coco_root), mapping))
    return sources


def prepare_experiment(exp: ExperimentConfig, use_ray: bool = True) -> dict[str, Any]:
    """Run ``seqformer prepare`` for an experiment (incremental: unchanged shards are reused)."""
    from seqformer.pipelines.prepare import PrepareOptions, prepare

    if exp.data.dataset == "synthetic":
        ensure_synthetic(exp)
    options = PrepareOptions(max_size=exp.data.max_size, jpeg_quality=exp.data.jpeg_quality,
                             shard_size=exp.data.shard_size)
    executor = None
    if use_ray:
        from seqformer.pipelines.ray_data import ray_executor
        from seqformer.platform.ray_env import init_ray

        init_ray(exp.resources.ray_address)
        executor = ray_executor(options)
    return prepare(prepare_sources(exp), exp.data.prepared_dir, options, executor=executor)


def is_prepared(exp: ExperimentConfig) -> bool:
    return (Path(exp.data.prepared_dir) / "manifest.json").is_file()


def augmentation_config(exp: ExperimentConfig) -> Any:
    from seqformer.pipelines.transforms import AugmentationConfig

    return AugmentationConfig(
        train_scales=tuple(exp.data.train_scales),
        max_train_size=exp.data.max_train_size,
        crop_scales=tuple(exp.data.crop_scales),
        crop_min=exp.data.crop_min,
        crop_max=exp.data.crop_max,
        crop_prob=exp.data.crop_prob,
        photometric=exp.data.photometric,
    )


class TrainBatches:
    """This worker's training batches, epoch by epoch, from its Ray Data shard.

    Args:
        exp: the experiment.
        shard: ``ray.train.get_dataset_shard("train")`` (a ``DataIterator``).
        seed: per-worker seed (base seed + rank).
    """

    def __init__(self, exp: ExperimentConfig, shard: Any, seed: int) -> None:
        from seqformer.pipelines.transforms import ClipAugmentation

        self.exp, self.shard, self.seed = exp, shard, seed
        self.augmentation = ClipAugmentation(augmentation_config(exp))
        self._steps_per_epoch: int | None = None

    def steps_per_epoch(self) -> int | None:
        """Micro-batches per epoch once the first epoch has been counted (None before)."""
        return self._steps_per_epoch

    def epoch(self, epoch: int) -> Iterator[dict[str, Any]]:
        from seqformer.pipelines.collate import iter_clip_batches

        count = 0
        for batch in iter_clip_batches(
            self.shard.iter_rows(),
            num_frames=self.exp.model.num_frames,
            batch_size=self.exp.train.batch_size,
            augmentation=self.augmentation,
            seed=self.seed,
            epoch=epoch,
            items_per_video=self.exp.data.items_per_video,
            shuffle_buffer=self.exp.data.shuffle_buffer,
            # the base seed, the same on every worker, so that batch k has one size everywhere
            batch_scale_seed=self.exp.train.seed if self.exp.data.shared_batch_scale else None,
        ):
            count += 1
            yield dict(batch)
        self._steps_per_epoch = count


def _val_videos(exp: ExperimentConfig) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    import json

    from seqformer.pipelines.evaluation.io import load_json

    path = Path(str(exp.data.val_annotations))
    gt = load_json(path, "validation annotations") if path.suffix == ".gz" else json.loads(path.read_text())
    videos = sorted(gt["videos"], key=lambda v: v["id"])
    if exp.eval.max_videos:
        videos = videos[: exp.eval.max_videos]
    root = Path(exp.data.val_root or exp.data.root or path.parent)
    return gt, videos, root / "JPEGImages"


@torch.no_grad()
def predict_videos(
    model: torch.nn.Module, exp: ExperimentConfig, videos: list[dict[str, Any]], frames_root: Path, device: Any
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[Any]]]:
    """Official inference per validation video: yields ``(video, results, decoded frames)``."""
    import numpy as np
    from PIL import Image

    from seqformer.pipelines.ytvis import unsafe_relative_path
    from seqformer.platform.predictor import eval_predictor

    predictor = eval_predictor(model, exp.eval.model_dump(), exp.data.eval_short_side, device=str(device))
    for video in videos:
        frames = []
        for name in video["file_names"]:
            unsafe = unsafe_relative_path(str(name))
            if unsafe:
                raise ValueError(f"validation video {video['id']}: file name {name!r} {unsafe}")
            path = frames_root / name
            if not path.is_file():
                raise FileNotFoundError(f"validation video {video['id']}: frame {path} is missing")
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        yield video, predictor.predict_video(frames), frames


def evaluate_model(
    model: torch.nn.Module, exp: ExperimentConfig, device: Any = "cpu", overlay_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run the model over the held-out split and score it with the YouTube-VIS evaluator.

    Returns:
        ``{"metrics": {AP, ..., per_category}, "results": [...], "images": [overlay PNG paths]}``.
    """
    import tempfile

    from seqformer.pipelines.evaluation import YTVISEvaluator

    was_training = model.training
    model.eval()
    gt, videos, frames_root = _val_videos(exp)
    evaluator = YTVISEvaluator(gt)
    evaluator.reset()
    images: list[str] = []
    overlay_dir = Path(overlay_dir or tempfile.mkdtemp(prefix="seqformer-val-"))
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for index, (video, results, frames) in enumerate(predict_videos(model, exp, videos, frames_root, device)):
        evaluator.process(video["id"], results)
        if index < 2:
            images.append(str(_overlay(frames, results, names, overlay_dir / f"video_{video['id']}.png")))
    metrics = evaluator.evaluate()
    model.train(was_training)
    return {"metrics": metrics, "results": evaluator.results, "images": images}


def _overlay(frames: list[Any], results: list[dict[str, Any]], names: dict[int, str], path: Path) -> Path:
    """A contact sheet of up to 8 frames with the predicted masks drawn over them."""
    from seqformer.pipelines.visualize import contact_sheet, overlay_frames, sample_indices

    wanted = set(sample_indices(len(frames), 8))
    picked = [f for i, f in enumerate(overlay_frames(frames, results, score_threshold=0.3, class_names=names))
              if i in wanted]
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(picked, [f"frame {i}" for i in sorted(wanted)]).save(path, format="PNG")
    return path
