"""Batch inference over a folder of videos: Ray Data with an actor pool, or a plain loop in this process.

Flow (``infer_folder``):

1. List the input folder (``pipelines.video_source.list_videos``): videos, plus empty folders and non-video files,
   which go straight to ``skipped``. Videos whose outputs are complete and were made with the same settings are
   skipped too (resumable), unless ``overwrite``.
2. Ray Data: the remaining videos become a dataset (one row per video); a task stage *probes* each (opens it and
   decodes its first frame with PIL / PyAV) so unreadable videos fail fast; an actor-pool stage (GPU actors when
   the cluster has GPUs, CPU actors otherwise) holds one ``Predictor`` per actor and, per video, streams the frames
   through the decoder into windows, runs the model, links windows, post-processes and writes the outputs
   atomically. Frames are decoded inside the actor, window by window, rather than shipped through the object store
   as a whole video: that is what keeps memory bounded for long videos.
3. The driver gathers one row per video (processed or failed with the reason), merges the per-video results of all
   complete videos into ``results.json`` (video ids 1.. in relative-path order, ``video_index.json`` maps them)
   and writes ``summary.json``.

``use_ray=False`` runs step 2 as a loop in this process with the same functions (used by tests and notebooks).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqformer.model.runtime import keep_freed_memory
from seqformer.pipelines.inference import (
    RESULTS_FILE,
    AssociationConfig,
    commit_video_outputs,
    merged_results,
    outputs_complete,
    read_marker,
    summary,
    write_json_atomic,
)
from seqformer.pipelines.video_io import CorruptFrameError
from seqformer.pipelines.video_source import VideoEntry, iter_frames, list_videos, probe_video
from seqformer.pipelines.visualize import render_video_outputs
from seqformer.platform.predictor import Predictor

logger = logging.getLogger(__name__)

# What makes one video fail without stopping the batch: unreadable / corrupt input, and running out of memory on it.
VIDEO_ERRORS = (CorruptFrameError, OSError, ValueError, MemoryError, torch.OutOfMemoryError)


@dataclass(frozen=True)
class InferOptions:
    """Options of ``seqformer infer`` (see ``commands/infer.py`` for the flags)."""

    window: int = 0
    """Frames per window; 0 = whole video (official)."""
    overlap: int = 4
    """Frames shared by consecutive windows."""
    short_side: int = 360
    """Shorter side of the model input."""
    top_k: int = 10
    """Results per video (official top-10)."""
    candidates: int = 20
    """Queries per window that may start or continue a track."""
    nms_iou: float | None = 0.5
    """Windowed mode: a window's duplicate queries (mask IoU above this) are merged; None: no merging."""
    coverage_exponent: float = 0.5
    """Windowed mode: track score x (frames covered / video frames) ** this."""
    overwrite: bool = False
    """Redo videos whose outputs are already complete."""
    overlay: bool = True
    """Write overlay.mp4 and contact_sheet.png."""
    score_threshold: float = 0.3
    """Instances below this score are not drawn on overlays (all are kept in the results)."""
    fps: float = 10.0
    """Overlay frame rate for frame folders (video files keep their own rate)."""
    device: str | None = None
    """Model device; None = CUDA when available, else CPU."""
    use_ray: bool = True
    """Run the videos through Ray Data with an actor pool; False = a loop in this process."""
    num_actors: int | None = None
    """Actor pool size; None = one per GPU, else CPUs // cpus_per_actor (at least 1)."""
    cpus_per_actor: int = 2
    """CPUs reserved by (and torch threads of) each actor."""

    def association(self) -> AssociationConfig:
        return AssociationConfig(top_k=self.top_k, candidates=max(self.candidates, self.top_k),
                                 nms_iou=self.nms_iou, coverage_exponent=self.coverage_exponent)


def fingerprint(model_spec: str, options: InferOptions) -> dict[str, Any]:
    """What a video's outputs depend on; a complete output with another fingerprint is redone."""
    keys = ("window", "overlap", "short_side", "top_k", "candidates", "nms_iou", "coverage_exponent", "overlay",
            "score_threshold", "fps")
    return {"model": model_spec, **{k: asdict(options)[k] for k in keys}}


def make_predictor(model: nn.Module | str, options: InferOptions, device: str | None = None) -> Predictor:
    """The Predictor the batch uses for these options (also what a notebook should build to get equal results)."""
    device = device or options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        # large activations reuse mapped memory instead of faulting in fresh pages every window (same values;
        # R50 on a 5-frame 360x640 clip: 6.0 -> 3.6 s, benchmarks/model.py)
        keep_freed_memory()
    return Predictor(model, device=device, window=options.window, overlap=options.overlap,
                     short_side=options.short_side, association=options.association())


def process_video(entry: VideoEntry, predictor: Predictor, output: str | Path, options: InferOptions,
                  expected_fp: dict[str, Any]) -> dict[str, Any]:
    """Predict one video and write its outputs; never raises for a bad video.

    Returns:
        ``{video, name, status: "processed", frames, seconds}`` or ``{video, name, status: "failed", reason}``.
    """
    start = time.perf_counter()
    try:
        info = probe_video(entry)
        prediction = predictor.predict_frames(iter_frames(entry))

        def write(folder: Path) -> dict[str, Any]:
            data = {"video": entry.video, "name": entry.name, "kind": entry.kind, "num_frames": prediction.num_frames,
                    "height": prediction.height, "width": prediction.width, "windows": prediction.windows,
                    "results": prediction.results}
            (folder / RESULTS_FILE).write_text(json.dumps(data), encoding="utf-8")
            if options.overlay:
                render_video_outputs(folder, iter_frames(entry), prediction.results, prediction.num_frames,
                                     fps=info.fps or options.fps, score_threshold=options.score_threshold)
            return {"frames": prediction.num_frames, "seconds": time.perf_counter() - start}

        commit_video_outputs(output, entry.name, expected_fp, write)
    except VIDEO_ERRORS as err:
        reason = f"{type(err).__name__}: {err}"
        logger.warning("video %s failed: %s", entry.video, reason)
        return {"video": entry.video, "name": entry.name, "status": "failed", "reason": reason}
    seconds = time.perf_counter() - start
    return {"video": entry.video, "name": entry.name, "status": "processed", "frames": prediction.num_frames,
            "seconds": seconds}


def infer_folder(
    model: nn.Module | str,
    input_dir: str | Path,
    output_dir: str | Path,
    options: InferOptions | None = None,
    *,
    on_video: Callable[[dict[str, Any]], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run batch inference over ``input_dir`` into ``output_dir`` and return the summary (also ``summary.json``).

    Args:
        model: a model spec (``models:/name@alias``, checkpoint, experiment YAML) or, with ``use_ray=False`` only,
            an ``nn.Module``.
        input_dir: folder with videos (frame sub-folders and video files, found recursively).
        output_dir: where ``videos/<name>/``, ``results.json``, ``video_index.json`` and ``summary.json`` go.
        options: see :class:`InferOptions`.
        on_video: called with each finished video's row (progress reporting).
        on_plan: called once with the number of videos about to be processed (after resumable ones are skipped).
    """
    options = options or InferOptions()
    if isinstance(model, nn.Module) and options.use_ray:
        raise TypeError("infer_folder with use_ray=True needs a model spec string (actors load the model "
                        "themselves); pass a checkpoint path / models:/ URI, or set use_ray=False")
    output = Path(output_dir)
    started = time.perf_counter()
    videos, skipped = list_videos(input_dir)
    if isinstance(model, str):
        # a local path is recorded resolved, so another spelling of it still resumes; a models:/ alias is recorded
        # as given (re-pointing the alias does not invalidate earlier outputs; pass --overwrite after a promotion)
        model_spec = str(Path(model).resolve()) if Path(model).exists() else model
    else:
        model_spec = f"<in-memory {type(model).__name__}>"
    expected_fp = fingerprint(model_spec, options)
    todo: list[VideoEntry] = []
    for entry in videos:
        if not options.overwrite and outputs_complete(output, entry.name, expected_fp):
            skipped.append({"video": entry.video, "reason": "outputs already complete (pass --overwrite to redo)"})
        else:
            todo.append(entry)
    logger.info("%d videos to process, %d skipped (%s)", len(todo), len(skipped), output)
    if on_plan is not None:
        on_plan(len(todo))
    if todo and options.use_ray:
        rows = _run_with_ray(todo, str(model), output, options, expected_fp, on_video)
    else:
        predictor = make_predictor(model, options) if todo else None
        rows = []
        for entry in todo:
            rows.append(process_video(entry, predictor, output, options, expected_fp))  # type: ignore[arg-type]
            if on_video is not None:
                on_video(rows[-1])
    processed = [{k: r[k] for k in ("video", "frames", "seconds")} for r in rows if r["status"] == "processed"]
    failed = [{"video": r["video"], "reason": r["reason"]} for r in rows if r["status"] == "failed"]
    complete = [(v.video, v.name) for v in videos if read_marker(output, v.name) is not None
                and v.video not in {f["video"] for f in failed}]
    results, index = merged_results(output, complete)
    write_json_atomic(output / "results.json", results)
    write_json_atomic(output / "video_index.json", index)
    report = summary(processed, skipped, failed, time.perf_counter() - started)
    write_json_atomic(output / "summary.json", report)
    logger.info("inference done: %d processed, %d skipped, %d failed, %.2f frames/s", len(processed), len(skipped),
                len(failed), report["frames_per_second"])
    return report


# ------------------------------------------------------------------------------------------------- Ray Data
class _PredictActor:
    """Actor of the pool: loads the model once, then predicts and writes one video per row."""

    def __init__(self, model_spec: str, output: str, options: InferOptions, expected_fp: dict[str, Any],
                 device: str) -> None:
        torch.set_num_threads(max(1, options.cpus_per_actor))
        self.predictor = make_predictor(model_spec, options, device)
        self.output, self.options, self.expected_fp = output, options, expected_fp

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = []
        for i in range(len(batch["video"])):
            entry = VideoEntry(str(batch["path"][i]), str(batch["video"][i]), str(batch["kind"][i]),  # type: ignore[arg-type]
                               str(batch["name"][i]))
            if batch["error"][i]:
                rows.append({"video": entry.video, "name": entry.name, "status": "failed",
                             "reason": str(batch["error"][i])})
            else:
                rows.append(process_video(entry, self.predictor, self.output, self.options, self.expected_fp))
        keys = ("video", "name", "status", "frames", "seconds", "reason")
        return {k: [r.get(k, "" if k in ("reason",) else 0) for r in rows] for k in keys}


def _probe_row(row: dict[str, Any]) -> dict[str, Any]:
    entry = VideoEntry(row["path"], row["video"], row["kind"], row["name"])
    try:
        probe_video(entry)
        row["error"] = ""
    except (CorruptFrameError, OSError) as err:
        row["error"] = f"{type(err).__name__}: {err}"
    return row


def _pool_size(options: InferOptions, num_videos: int) -> tuple[int, float, str]:
    """``(actors, GPUs per actor, device)`` from the options and the cluster's resources."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    wants_cpu = options.device is not None and options.device.startswith("cpu")
    if gpus and not wants_cpu:
        size = options.num_actors or gpus
        return max(1, min(size, num_videos)), 1.0, "cuda"
    cpus = int(resources.get("CPU", 1))
    size = options.num_actors or max(1, cpus // max(1, options.cpus_per_actor))
    return max(1, min(size, num_videos)), 0.0, "cpu"


def _run_with_ray(
    todo: list[VideoEntry],
    model_spec: str,
    output: Path,
    options: InferOptions,
    expected_fp: dict[str, Any],
    on_video: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    import ray

    from seqformer.platform.ray_env import init_ray

    init_ray()
    size, gpus_per_actor, device = _pool_size(options, len(todo))
    logger.info("Ray Data: %d videos, actor pool of %d %s actors", len(todo), size, device.upper())
    items = [{"path": e.path, "video": e.video, "kind": e.kind, "name": e.name} for e in todo]
    # Probing opens a video and decodes one frame; it asks for no CPU so that an actor pool holding every CPU of the
    # cluster (the default on a CPU machine) cannot starve it.
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(_probe_row, num_cpus=0)
    dataset = dataset.map_batches(
        _PredictActor,
        fn_constructor_kwargs={"model_spec": model_spec, "output": str(output.resolve()), "options": options,
                               "expected_fp": expected_fp, "device": device},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=options.cpus_per_actor if not gpus_per_actor else 1,
        num_gpus=gpus_per_actor,
    )
    rows = []
    for row in dataset.iter_rows():
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        rows.append(row)
        if on_video is not None:
            on_video(row)
    return rows

