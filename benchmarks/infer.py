"""Batch-inference benchmark: frames per second on CPU, and peak memory against video length with windows on.

Two measurements, each case in a fresh child process so that peaks are not inherited:

* ``fps``: ``Predictor.predict_video`` (preprocessing, forward, post-processing) on a short synthetic clip at
  360x640, whole-video (one window), for the demo model (``experiments/demo/tiny_cpu.yaml``) and the official R50
  configuration (random weights: speed does not depend on them). One warm-up forward on two frames first.
* ``memory``: the full per-video batch step (``platform.infer.process_video``: PyAV decode, windowed prediction,
  association, results JSON, overlay MP4 and contact sheet) on synthetic MP4s of 100, 500 and 1,000 frames, with
  the demo model. Peak memory is the child's peak resident set size (``ru_maxrss``); ``model_rss`` is the resident
  size after loading the model, before the video. Videos are written beforehand (streamed, by the parent).

Usage::

    python benchmarks/infer.py                       # everything (slow on a small CPU machine)
    python benchmarks/infer.py --cases memory --lengths 100 500 1000 --size 96 160 --window 16
    python benchmarks/infer.py --smoke               # tiny sizes, a few seconds: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "infer.json"


def _frames(num_frames: int, height: int, width: int, seed: int = 0):
    """Synthetic frames (two moving squares over noise), generated lazily."""
    import numpy as np

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    for t in range(num_frames):
        frame = background.copy()
        y, x = (t * 3) % (height - side), (t * 5) % (width - side)
        frame[y : y + side, x : x + side] = (230, 50, 40)
        frame[height - side - y // 2 : height - y // 2, width - side - x // 2 : width - x // 2] = (40, 180, 240)
        yield frame


def _model_config(name: str, smoke: bool):
    from seqformer.model import ModelConfig

    if smoke:
        return ModelConfig(hidden_dim=32, dim_feedforward=64, enc_layers=1, dec_layers=1, nheads=4, num_queries=10,
                           num_classes=5, num_frames=2)
    if name == "r50":
        return ModelConfig()
    from seqformer.platform.config import load_experiment

    return load_experiment(ROOT / "experiments" / "demo" / "tiny_cpu.yaml").model


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fps_case(args: dict[str, Any], queue) -> None:
    import torch

    from seqformer.model import build_model
    from seqformer.platform.predictor import Predictor

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    model = build_model(_model_config(args["model"], args["smoke"])).eval()
    predictor = Predictor(model, short_side=args["short_side"])
    height, width = args["size"]
    predictor.predict_video(_frames(2, height, width))  # warm-up (kernel choice, allocator)
    frames = list(_frames(args["frames"], height, width))
    start = time.perf_counter()
    predictor.predict_video(frames)
    seconds = time.perf_counter() - start
    queue.put({"case": "fps", "model": args["model"], "frames": args["frames"], "size": f"{height}x{width}",
               "short_side": args["short_side"], "seconds": seconds, "frames_per_second": args["frames"] / seconds,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _memory_case(args: dict[str, Any], queue) -> None:
    import torch

    from seqformer.model import build_model
    from seqformer.pipelines.video_source import list_videos
    from seqformer.platform.infer import InferOptions, make_predictor, process_video

    torch.set_num_threads(args["threads"])
    torch.manual_seed(0)
    model = build_model(_model_config("demo", args["smoke"])).eval()
    options = InferOptions(window=args["window"], overlap=args["overlap"], short_side=args["short_side"],
                           score_threshold=0.0, use_ray=False)
    predictor = make_predictor(model, options, "cpu")
    entry = next(v for v in list_videos(args["input"])[0] if v.video == Path(args["video"]).name)
    model_rss = _rss_mib()
    row = process_video(entry, predictor, args["output"], options, {"benchmark": True})
    assert row["status"] == "processed", row
    queue.put({"case": "memory", "model": "demo", "frames": row["frames"], "window": args["window"],
               "overlap": args["overlap"], "size": "x".join(map(str, args["size"])), "short_side": args["short_side"],
               "seconds": row["seconds"], "frames_per_second": row["frames"] / row["seconds"],
               "model_rss_mib": model_rss,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _in_child(target, args: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["fps", "memory"], choices=["fps", "memory"])
    parser.add_argument("--models", nargs="+", default=["demo", "r50"], choices=["demo", "r50"])
    parser.add_argument("--fps-frames", type=int, default=8, help="frames of the fps clip (demo; R50 uses 5)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 500, 1000])
    parser.add_argument("--size", nargs=2, type=int, default=[96, 160], metavar=("H", "W"),
                        help="frame size of the memory videos (default 96x160, the demo's eval scale)")
    parser.add_argument("--memory-short-side", type=int, default=96)
    parser.add_argument("--whole-lengths", nargs="*", type=int, default=[100, 500],
                        help="lengths also run whole-video (window 0, official) for comparison")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes (checks the script runs)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.smoke:
        args.models, args.fps_frames, args.lengths, args.size = ["demo"], 3, [12, 24], [48, 64]
        args.whole_lengths = [12]
        args.memory_short_side, args.window, args.overlap = 32, 6, 2
    rows = []
    if "fps" in args.cases:
        for model in args.models:
            size, short = ([48, 64], 32) if args.smoke else ([360, 640], 360)
            frames = 5 if model == "r50" else args.fps_frames
            rows.append(_in_child(_fps_case, {"model": model, "frames": frames, "size": size, "short_side": short,
                                              "threads": args.threads, "smoke": args.smoke}))
            print(json.dumps(rows[-1]), flush=True)
    if "memory" in args.cases:
        from seqformer.pipelines.visualize import write_mp4

        with tempfile.TemporaryDirectory(prefix="seqformer-bench-") as tmp:
            inputs = Path(tmp) / "in"
            inputs.mkdir()
            cases = [(n, args.window) for n in args.lengths] + [(n, 0) for n in args.whole_lengths]
            for length, window in cases:
                video = inputs / f"video_{length:05d}.mp4"
                if not video.exists():
                    write_mp4(video, _frames(length, *args.size), fps=25)
                rows.append(_in_child(_memory_case, {
                    "input": str(inputs), "video": str(video), "output": str(Path(tmp) / f"out{window}"),
                    "size": args.size, "short_side": args.memory_short_side, "window": window,
                    "overlap": args.overlap if window else 0, "threads": args.threads, "smoke": args.smoke,
                }))
                print(json.dumps(rows[-1]), flush=True)
    _report(rows, args)


def _report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print("\n| case | model | frames | size (input short side) | window | frames/s | model RSS MiB | peak RSS MiB "
          "| peak - model MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        window = f"{r['window']}/{r['overlap']}" if r["case"] == "memory" and r["window"] else "whole"
        model_rss = f"{r['model_rss_mib']:.0f}" if "model_rss_mib" in r else "-"
        extra = f"{r['peak_rss_mib'] - r['model_rss_mib']:.0f}" if "model_rss_mib" in r else "-"
        print(f"| {r['case']} | {r['model']} | {r['frames']} | {r['size']} ({r['short_side']}) | {window} | "
              f"{r['frames_per_second']:.2f} | {model_rss} | {r['peak_rss_mib']:.0f} | {extra} |")
    memory = [r for r in rows if r["case"] == "memory" and r["window"]]
    if len(memory) >= 2:
        growth = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"] - 1
        first, last = (r["peak_rss_mib"] - r["model_rss_mib"] for r in (memory[0], memory[-1]))
        print(f"\npeak memory {memory[0]['frames']} -> {memory[-1]['frames']} frames (windowed): {growth:+.1%} "
              f"(above the loaded model: {first:.0f} -> {last:.0f} MiB)")
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                                        "threads": args.threads, "rows": rows}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
