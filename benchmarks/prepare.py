"""Benchmark of `seqformer prepare`: clip records/s and peak memory, Ray Data at 1 and 2 CPUs vs a plain loop,
against the JPEG-decoding bound.

    python benchmarks/prepare.py [--videos 100 1000] [--unique-videos 100] [--height 180 --width 320]
                                 [--min-frames 10 --max-frames 20] [--cpus 1 2] [--work-dir DIR]

Data: ``--unique-videos`` synthetic videos are generated once; a dataset of N videos is an annotation file with N
entries cycling over them (same decode work per video, cheap to build at 1,000 videos). Each measurement runs in
a fresh subprocess; its peak memory is sampled every 50 ms as (a) the driver's RSS and (b) the RSS summed over the
driver and all its descendants (Ray's raylet, GCS and workers; shared object-store pages may be counted more than
once). Ray runs first build a few videos to start their workers; that one-off cost is reported as
``ray_startup_s`` and excluded from records/s. The decode bound is the frames/s that PIL reaches decoding every
frame of the dataset fully, with 1 and with C processes (multiprocessing), which is the floor of work `prepare` must
do (it validates every frame by decoding it). Writes ``benchmarks/results/prepare.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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


def make_dataset(work: Path, videos: int, unique: int, args: argparse.Namespace) -> Path:
    """Annotation file of ``videos`` entries cycling over ``unique`` generated videos."""
    from seqformer.pipelines.synthetic import generate_ytvis

    base_json = work / "base.json"
    if not base_json.is_file():
        generate_ytvis(
            work,
            unique,
            args.height,
            args.width,
            args.min_frames,
            args.max_frames,
            seed=0,
            annotations_name="base.json",
        )
    base = json.loads(base_json.read_text())
    out = work / f"videos_{videos}.json"
    if not out.is_file():
        entries, anns = [], []
        for i in range(videos):
            src = base["videos"][i % len(base["videos"])]
            entries.append({**src, "id": i + 1})
            for ann in base["annotations"]:
                if ann["video_id"] == src["id"]:
                    anns.append({**ann, "id": len(anns) + 1, "video_id": i + 1})
        out.write_text(json.dumps({"videos": entries, "annotations": anns, "categories": base["categories"]}))
    return out


def _decode(path: str) -> int:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
    return 1


def decode_bound(work: Path, annotations: Path, processes: int) -> dict:
    data = json.loads(annotations.read_text())
    paths = [str(work / "JPEGImages" / f) for v in data["videos"] for f in v["file_names"]]
    for p in paths[:200]:  # warm the page cache
        _decode(p)
    start = time.perf_counter()
    if processes == 1:
        frames = sum(_decode(p) for p in paths)
    else:
        with Pool(processes) as pool:
            frames = sum(pool.map(_decode, paths, chunksize=64))
    elapsed = time.perf_counter() - start
    return {"frames": frames, "seconds": elapsed, "frames_per_s": frames / elapsed}


# ---------------------------------------------------------------------------------------------------- runs


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from seqformer.pipelines.prepare import PrepareOptions, Source, local_executor, prepare

    options = PrepareOptions(shard_size=args.shard_size, max_size=args.max_size)
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
    with PeakMemory(os.getpid()) as memory:
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
                "load_average_1m": os.getloadavg()[0],
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
        str(root / "videos_8.json"),
        "--shard-size",
        str(args.shard_size),
        "--max-size",
        str(args.max_size),
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
    parser.add_argument("--videos", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--unique-videos", type=int, default=100)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--min-frames", type=int, default=10)
    parser.add_argument("--max-frames", type=int, default=20)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--max-size", type=int, default=768)
    parser.add_argument("--work-dir", default="/tmp/seqformer-bench-prepare")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "prepare.json"))
    for name in ("--child-mode", "--child-annotations", "--child-root", "--child-out", "--child-warmup"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--child-cpus", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_mode:
        child(args)
        return

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows, bounds = [], {}
    make_dataset(work, 8, args.unique_videos, args)  # warm-up set of the Ray runs
    for videos in args.videos:
        annotations = make_dataset(work, videos, args.unique_videos, args)
        # best of three: the machine's capability, least disturbed by other load on a shared host
        bounds[videos] = {
            c: max((decode_bound(work, annotations, c) for _ in range(3)), key=lambda b: b["frames_per_s"])
            for c in sorted(set([1, *args.cpus]))
        }
        rows.append(run_child("loop", 1, annotations, work, work / "out", args))
        for cpus in args.cpus:
            rows.append(run_child("ray", cpus, annotations, work, work / "out", args))
        for row in rows:
            row.setdefault("videos", videos)
            bound = bounds[videos][row["cpus"]]["frames_per_s"]
            row.setdefault("fraction_of_decode_bound", row["frames_per_s"] / bound)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("child")},
        "decode_bound": {str(v): {str(c): b for c, b in per.items()} for v, per in bounds.items()},
        "runs": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    header = (
        f"{'videos':>6} {'mode':>5} {'cpus':>4} {'records/s':>10} {'frames/s':>9} {'decode bound':>12} "
        f"{'of bound':>8} {'driver MiB':>10} {'tree MiB':>9}"
    )
    print(f"load average (1 min) at the end of each run: {[round(r['load_average_1m'], 1) for r in rows]}")
    print(header)
    for row in rows:
        bound = bounds[row["videos"]][row["cpus"]]["frames_per_s"]
        print(
            f"{row['videos']:>6} {row['mode']:>5} {row['cpus']:>4} {row['records_per_s']:>10.1f} "
            f"{row['frames_per_s']:>9.0f} {bound:>12.0f} {row['fraction_of_decode_bound']:>8.0%} "
            f"{row['peak_driver_mib']:>10.0f} {row['peak_tree_mib']:>9.0f}"
        )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
