"""Benchmark of `seqformer prepare`: clip records/s and peak memory, Ray Data at 1 and 2 CPUs vs a plain loop,
against the JPEG-decoding bound, at several dataset sizes.

    nice -n 15 python benchmarks/prepare.py [--videos 100 300 1000] [--reps 2] [--height 180 --width 320]
                                            [--min-frames 10 --max-frames 30] [--cpus 1 2] [--work-dir DIR]

Data: ``--unique-videos`` synthetic videos are generated once; a dataset of N videos is an annotation file with N
entries cycling over them (same decode work per video, cheap to build at 1,000 videos). Masks are stored as
uncompressed RLE (``counts`` lists), the form of the YouTube-VIS 2019 train JSON, so prepare converts every mask.

Interleaving (the host is shared and loaded): for each size and repetition, the decode bound (1 and C processes)
and every prepare configuration run back to back; best-of over repetitions is reported for both sides, and the
1-minute load average is recorded before and after every measurement. Each prepare run is a fresh subprocess whose
peak memory is sampled every 100 ms as (a) the driver's RSS and (b) the RSS summed over the driver and all its
descendants (Ray's raylet, GCS and workers; shared object-store pages may be counted more than once). Ray runs
first prepare 16 videos to start their workers; that one-off cost is reported as ``ray_startup_s`` and excluded.

The decode bound is the frames/s PIL reaches fully decoding every frame of the dataset (open + load, file read
included) with 1 process and with a pool of C processes started before timing. Prepare reads each frame exactly
once to validate it, and with frames within ``--max-size`` stores the original bytes; its validation of such a
JPEG is a 1/8-DCT-scale decode (every entropy-coded byte read, 1/64 of the inverse transform), so it can run
above the full-decode bound. ``per_frame_ms`` separately times, on one process, the decode alone and prepare's
per-frame work with and without a downscale (720p frames to ``--max-size``: draft decode + resize + JPEG
encode), which is inherently more than a decode. Writes ``benchmarks/results/prepare.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# ---------------------------------------------------------------------------------------------------- memory


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(children.get(current, []))
    return out


class PeakMemory:
    """Samples the RSS of a process and of its whole tree in a background thread."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        self.pid, self.period_s = pid, period_s
        self.driver_kib = self.tree_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.driver_kib = max(self.driver_kib, _rss_kib(self.pid))
            self.tree_kib = max(self.tree_kib, sum(_rss_kib(p) for p in _descendants(self.pid)))
            time.sleep(self.period_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------------------------------- data


def _uncompressed(seg: dict | None) -> dict | None:
    """Compressed RLE → uncompressed RLE (``counts`` as a list of run lengths, column-major)."""
    if seg is None:
        return None
    import numpy as np
    from pycocotools import mask as mask_utils

    mask = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()})
    flat = np.asfortranarray(mask).reshape(-1, order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": seg["size"], "counts": counts}


def make_dataset(work: Path, videos: int, args: argparse.Namespace) -> Path:
    """Annotation file of ``videos`` entries cycling over ``--unique-videos`` generated videos."""
    from seqformer.pipelines.synthetic import generate_ytvis

    base_json = work / "base.json"
    if not base_json.is_file():
        generate_ytvis(
            work,
            args.unique_videos,
            args.height,
            args.width,
            args.min_frames,
            args.max_frames,
            seed=0,
            annotations_name="base.json",
        )
    out = work / f"videos_{videos}.json"
    if not out.is_file():
        base = json.loads(base_json.read_text())
        by_video: dict[int, list[dict]] = {}
        for ann in base["annotations"]:
            ann = {**ann, "segmentations": [_uncompressed(s) for s in ann["segmentations"]]}
            by_video.setdefault(ann["video_id"], []).append(ann)
        entries, anns = [], []
        for i in range(videos):
            src = base["videos"][i % len(base["videos"])]
            entries.append({**src, "id": i + 1})
            for ann in by_video.get(src["id"], []):
                anns.append({**ann, "id": len(anns) + 1, "video_id": i + 1})
        out.write_text(json.dumps({"videos": entries, "annotations": anns, "categories": base["categories"]}))
    return out


def _decode(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
    return 1


def decode_bound(paths: list[str], pool: Pool | None) -> dict:
    """Frames/s of a full decode of every frame, in this process or with the (already started) pool."""
    load_before = _load()
    start = time.perf_counter()
    if pool is None:
        frames = sum(_decode(p) for p in paths)
    else:
        frames = sum(pool.map(_decode, paths, chunksize=32))
    elapsed = time.perf_counter() - start
    return {"frames": frames, "seconds": elapsed, "frames_per_s": frames / elapsed, "load": [load_before, _load()]}


def per_frame_costs(work: Path, args: argparse.Namespace) -> dict:
    """Single-process ms per frame: decode alone vs prepare's frame work (kept as is, or downscaled)."""
    import io

    import numpy as np
    from PIL import Image

    from seqformer.pipelines.video_io import encode_jpeg, prepare_frame

    rng = np.random.default_rng(0)
    samples = {}
    small = [Path(p).read_bytes() for p in sorted((work / "JPEGImages").glob("*/*.jpg"))[:40]]
    noise = rng.integers(0, 255, (720 // 8, 1280 // 8, 3), dtype=np.uint8)
    big_image = Image.fromarray(noise).resize((1280, 720), Image.BICUBIC)
    big = [encode_jpeg(big_image, 90)] * 8

    def timed(fn, frames: list[bytes], reps: int = 3) -> float:  # noqa: ANN001
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            for data in frames:
                fn(data)
            best = min(best, (time.perf_counter() - start) / len(frames))
        return round(best * 1e3, 3)

    def decode_only(data: bytes) -> None:
        Image.open(io.BytesIO(data)).load()

    def resize_no_draft(data: bytes) -> None:
        image = Image.open(io.BytesIO(data))
        image.load()
        scale = args.max_size / max(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        encode_jpeg(image.resize(size, Image.BILINEAR), 95)

    samples[f"{args.height}x{args.width}_decode"] = timed(decode_only, small)
    samples[f"{args.height}x{args.width}_prepare_frame_kept"] = timed(
        lambda d: prepare_frame(d, args.max_size, 95), small
    )
    samples["720x1280_decode"] = timed(decode_only, big)
    samples[f"720x1280_to_{args.max_size}_decode_resize_encode_no_draft"] = timed(resize_no_draft, big)
    samples[f"720x1280_to_{args.max_size}_prepare_frame_draft"] = timed(
        lambda d: prepare_frame(d, args.max_size, 95), big
    )
    samples["720x1280_to_360_prepare_frame_draft"] = timed(lambda d: prepare_frame(d, 360, 95), big)
    return samples


# ---------------------------------------------------------------------------------------------------- runs


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from seqformer.pipelines.prepare import PrepareOptions, Source, local_executor, prepare

    options = PrepareOptions(shard_size=args.shard_size, max_size=args.max_size, window_frames=args.window_frames)
    sources = [Source("ytvis", args.child_annotations, args.child_root)]
    out = Path(args.child_out)
    startup = 0.0
    if args.child_mode == "ray":
        from seqformer.pipelines.ray_data import ensure_ray, ray_executor

        t0 = time.perf_counter()
        ensure_ray(num_cpus=args.child_cpus, object_store_memory=512 * 2**20)
        executor = ray_executor(options)
        # start the Ray workers (process start + imports) on a few videos; reported apart as a one-off cost
        warmup = [Source("ytvis", args.child_warmup, args.child_root)]
        prepare(warmup, out.with_name(out.name + "-warmup"), options, executor=executor)
        startup = time.perf_counter() - t0
    else:
        executor = local_executor(options)
    load_before = _load()
    with PeakMemory(os.getpid(), period_s=0.1) as memory:
        start = time.perf_counter()
        manifest = prepare(sources, out, options, executor=executor)
        elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "records": manifest["records"],
                "frames": manifest["frames"],
                "seconds": elapsed,
                "ray_startup_s": startup,
                "load": [load_before, _load()],
                "peak_driver_mib": memory.driver_kib / 1024,
                "peak_tree_mib": memory.tree_kib / 1024,
            }
        )
    )


def run_child(mode: str, cpus: int, annotations: Path, root: Path, out: Path, args: argparse.Namespace) -> dict:
    import shutil

    for folder in (out, out.with_name(out.name + "-warmup")):
        shutil.rmtree(folder, ignore_errors=True)  # measure a full build, not an incremental no-op
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_raylet_start_wait_time_s": "300",  # a starved host (nice 15 beside busy jobs) starts Ray slowly
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        sys.executable,
        __file__,
        "--child-mode",
        mode,
        "--child-cpus",
        str(cpus),
        "--child-annotations",
        str(annotations),
        "--child-root",
        str(root),
        "--child-out",
        str(out),
        "--child-warmup",
        str(root / "videos_16.json"),
        "--shard-size",
        str(args.shard_size),
        "--max-size",
        str(args.max_size),
        "--window-frames",
        str(args.window_frames),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{mode} run failed:\n{result.stderr[-3000:]}")
    data = json.loads(lines[-1])
    data.update(
        mode=mode,
        cpus=cpus,
        records_per_s=data["records"] / data["seconds"],
        frames_per_s=data["frames"] / data["seconds"],
    )
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument(
        "--large-ray-cpus",
        type=int,
        nargs="*",
        default=[],
        help="at sizes above the smallest, run only Ray prepare at these CPU counts (and their decode bound)",
    )
    parser.add_argument("--large-reps", type=int, default=1, help="repetitions at sizes above the smallest")
    parser.add_argument("--unique-videos", type=int, default=100)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--min-frames", type=int, default=10)
    parser.add_argument("--max-frames", type=int, default=30)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--max-size", type=int, default=768)
    parser.add_argument("--window-frames", type=int, default=128)
    parser.add_argument("--work-dir", default="/tmp/seqformer-bench-prepare-v2")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "prepare.json"))
    for name in ("--child-mode", "--child-annotations", "--child-root", "--child-out", "--child-warmup"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--child-cpus", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_mode:
        child(args)
        return

    load_start = _load()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    make_dataset(work, 16, args)  # warm-up set of the Ray runs
    per_frame = per_frame_costs(work, args)
    print(f"per-frame ms (1 process): {per_frame}", flush=True)
    pools = {c: Pool(c) for c in sorted(set(args.cpus)) if c > 1}
    rows: list[dict] = []
    bounds: dict[int, dict[int, list[dict]]] = {}
    try:
        for videos in args.videos:
            annotations = make_dataset(work, videos, args)
            data = json.loads(annotations.read_text())
            paths = [str(work / "JPEGImages" / f) for v in data["videos"] for f in v["file_names"]]
            del data
            for p in paths[:200]:  # warm the page cache
                _decode(p)
            configs = [("loop", 1), *[("ray", c) for c in args.cpus]]
            reps = args.reps
            if videos != min(args.videos) and args.large_ray_cpus:  # a shorter plan for the larger sizes
                configs, reps = [("ray", c) for c in args.large_ray_cpus], args.large_reps
            bounds[videos] = {c: [] for c in sorted({c for _, c in configs})}
            for rep in range(reps):
                for cpus in bounds[videos]:
                    bounds[videos][cpus].append(decode_bound(paths, pools.get(cpus)))
                for mode, cpus in configs:
                    row = run_child(mode, cpus, annotations, work, work / "out", args)
                    row.update(videos=videos, rep=rep)
                    rows.append(row)
                    print(
                        f"{videos:>5} videos rep {rep} {mode:>4} x{cpus}: {row['frames_per_s']:.0f} frames/s, "
                        f"tree {row['peak_tree_mib']:.0f} MiB, load {row['load']}",
                        flush=True,
                    )
    finally:
        for pool in pools.values():
            pool.close()
    summary = summarise(rows, bounds)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average_1m": {"start": load_start, "end": _load()},
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "per_frame_ms": per_frame,
        "decode_bound": {str(v): {str(c): b for c, b in per.items()} for v, per in bounds.items()},
        "runs": rows,
        "summary": summary,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(
        f"{'videos':>6} {'mode':>5} {'cpus':>4} {'records/s':>10} {'frames/s':>9} {'decode bound':>12} "
        f"{'of bound':>8} {'driver MiB':>10} {'tree MiB':>9}"
    )
    for row in summary["table"]:
        print(
            f"{row['videos']:>6} {row['mode']:>5} {row['cpus']:>4} {row['records_per_s']:>10.1f} "
            f"{row['frames_per_s']:>9.0f} {row['decode_bound_frames_per_s']:>12.0f} "
            f"{row['fraction_of_decode_bound']:>8.0%} {row['peak_driver_mib']:>10.0f} {row['peak_tree_mib']:>9.0f}"
        )
    print(f"memory growth (peak at the largest / smallest size): {summary['memory_growth']}")
    print(f"load average 1 min: start {load_start}, end {_load()}; wrote {args.output}")


def summarise(rows: list[dict], bounds: dict[int, dict[int, list[dict]]]) -> dict:
    """Best-of repetitions per (size, mode, cpus) on both sides; peak memory is the largest over repetitions."""
    table = []
    for videos, per_cpus in bounds.items():
        for mode, cpus in sorted({(r["mode"], r["cpus"]) for r in rows}):
            if cpus not in per_cpus:
                continue
            mine = [r for r in rows if r["videos"] == videos and r["mode"] == mode and r["cpus"] == cpus]
            if not mine:
                continue
            best = max(mine, key=lambda r: r["frames_per_s"])
            bound = max(b["frames_per_s"] for b in per_cpus[cpus])
            table.append(
                {
                    "videos": videos,
                    "mode": mode,
                    "cpus": cpus,
                    "records_per_s": best["records_per_s"],
                    "frames_per_s": best["frames_per_s"],
                    "decode_bound_frames_per_s": bound,
                    "fraction_of_decode_bound": best["frames_per_s"] / bound,
                    "median_frames_per_s": statistics.median(r["frames_per_s"] for r in mine),
                    "peak_driver_mib": max(r["peak_driver_mib"] for r in mine),
                    "peak_tree_mib": max(r["peak_tree_mib"] for r in mine),
                    "loads": [r["load"] for r in mine],
                }
            )
    sizes = sorted(bounds)
    growth = {}
    for mode, cpus in sorted({(r["mode"], r["cpus"]) for r in rows}):
        for key in ("peak_tree_mib", "peak_driver_mib"):
            peak = {t["videos"]: t[key] for t in table if t["mode"] == mode and t["cpus"] == cpus}
            if sizes[0] in peak and sizes[-1] in peak:
                growth[f"{mode}x{cpus}_{key}"] = round(peak[sizes[-1]] / peak[sizes[0]], 3)
    return {"table": table, "memory_growth": growth}


if __name__ == "__main__":
    main()
