"""``seqformer infer --model MODEL --input DIR --output DIR``: batch inference over a folder of videos."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

HELP = "batch inference over a folder of videos (frame folders, mp4/avi/mov/mkv/webm): results, overlays, summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="models:/<name>@<alias> or models:/<name>/<version>, a checkpoint file or folder (ours "
                        "or official), or an experiment YAML with a trained model / train.init_checkpoint")
    parser.add_argument("--input", required=True, help="folder with videos, searched recursively")
    parser.add_argument("--output", required=True, help="output folder (videos/<name>/, results.json, summary.json)")
    parser.add_argument("--window", type=int, default=0,
                        help="frames per window for long videos (bounded memory); 0 = whole video (official)")
    parser.add_argument("--overlap", type=int, default=4, help="frames shared by consecutive windows (default 4)")
    parser.add_argument("--short-side", type=int, default=360, help="model input shorter side (official 360)")
    parser.add_argument("--top-k", type=int, default=10, help="results per video (official 10)")
    parser.add_argument("--candidates", type=int, default=20,
                        help="queries per window that may start or continue a track (default 20)")
    parser.add_argument("--nms-iou", type=float, default=0.5,
                        help="windowed mode: merge a window's queries whose masks overlap a higher-scoring one's by "
                        "more than this IoU (default 0.5; 0 = no merging)")
    parser.add_argument("--coverage-exponent", type=float, default=0.5,
                        help="windowed mode: track score x (frames covered / video frames) ** this (default 0.5; "
                        "0 = plain mean)")
    parser.add_argument("--overwrite", action="store_true", help="redo videos whose outputs are already complete")
    parser.add_argument("--no-overlay", action="store_true", help="write results only (no overlay.mp4 / PNG)")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="instances below this score are not drawn on overlays (default 0.3)")
    parser.add_argument("--fps", type=float, default=10.0, help="overlay frame rate for frame folders (default 10)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
    parser.add_argument("--local", action="store_true", help="run in this process instead of a Ray actor pool")
    parser.add_argument("--num-actors", type=int, default=None,
                        help="actor pool size (default: one per GPU, else CPUs // --cpus-per-actor)")
    parser.add_argument("--cpus-per-actor", type=int, default=2, help="CPUs per actor (default 2)")


class _Progress:
    """A one-line progress bar on an interactive terminal, log lines otherwise."""

    def __init__(self) -> None:
        self.total, self.done, self.frames, self.start = 0, 0, 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.log: Any = None

    def plan(self, total: int) -> None:
        """Called once the number of videos to process is known."""
        import logging

        from seqformer.platform.log import ProgressLogger

        self.total, self.start = total, time.monotonic()
        self.log = ProgressLogger(logging.getLogger("seqformer.infer"), total, "videos")

    def __call__(self, row: dict[str, Any]) -> None:
        self.done += 1
        self.frames += int(row.get("frames") or 0)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rates = f"{self.done / elapsed:.2f} videos/s, {self.frames / elapsed:.1f} frames/s"
        if self.tty:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            print(f"\r[{bar}] {self.done}/{self.total} videos, {rates}", end="", file=sys.stderr, flush=True)
            if self.done >= self.total:
                print(file=sys.stderr)
        else:
            self.log.update(1, extra=f"{self.frames} frames, {rates}, last {row['video']} {row['status']}")


def run(args: argparse.Namespace) -> int:
    from seqformer.platform.infer import InferOptions, infer_folder

    if not 0.0 <= args.nms_iou <= 1.0:
        raise ValueError(f"--nms-iou must be in [0, 1] (0: no merging), got {args.nms_iou}")
    if args.coverage_exponent < 0:
        raise ValueError(f"--coverage-exponent must be >= 0 (0: plain mean score), got {args.coverage_exponent}")
    options = InferOptions(
        window=args.window, overlap=args.overlap, short_side=args.short_side, top_k=args.top_k,
        candidates=args.candidates, nms_iou=args.nms_iou or None, coverage_exponent=args.coverage_exponent,
        overwrite=args.overwrite, overlay=not args.no_overlay,
        score_threshold=args.score_threshold, fps=args.fps, device=args.device, use_ray=not args.local,
        num_actors=args.num_actors, cpus_per_actor=args.cpus_per_actor,
    )
    progress = _Progress()
    report = infer_folder(args.model, args.input, args.output, options, on_video=progress, on_plan=progress.plan)
    print(f"seqformer infer: {len(report['processed'])} processed, {len(report['skipped'])} skipped, "
          f"{len(report['failed'])} failed; {report['frames_per_second']:.2f} frames/s -> {args.output}/summary.json")
    for item in report["failed"]:
        print(f"  failed  {item['video']}: {item['reason']}")
    for item in report["skipped"]:
        print(f"  skipped {item['video']}: {item['reason']}")
    return 0 if not report["failed"] else 1
