"""Benchmark of multi-scale deformable attention on the CPU: compiled kernel vs the reference vs CPU peers.

Shapes are SeqFormer's on a 5-frame 360x640 clip (levels 45x80, 23x40, 12x20, 6x10; 8 heads x 32 channels; 4 levels;
4 points): the encoder (every pixel a query, frames as the batch) and the decoder (300 queries per frame).
For each implementation it measures forward and forward+backward wall time and CPU time (``time.process_time``, all
threads of the process; median of repeats after a warm-up) and the peak memory allocated above the inputs during the
call, then prints a table and writes JSON. Repetitions are interleaved: each round calls every implementation once,
so a change of machine load during the run affects all of them alike. Times are medians (minimums also go to the
JSON); speed-ups (the JSON's ``speedups``) are ratios of medians within one run. The 1-minute load average at the
start and the end is recorded. On a shared machine CPU time is the steadier figure: other work
stretches wall time, CPU time only through shared caches and memory bandwidth. ``--threads 1`` gives single-thread
figures.

Peak memory: Linux's peak resident set size, reset before each measured call (``/proc/self/clear_refs``), minus the
resident size before it. glibc is told to return every large block to the system at once
(``MALLOC_MMAP_THRESHOLD_``, set by re-running this script with it), so freed memory does not hide a later peak.
This also makes every call fault in fresh pages for its outputs, which is part of the timings (~0.65 ms per MB of
output in 4 KiB pages on the development machine; the compiled kernel asks for transparent huge pages for its large
outputs, see docs/kernels.md). ``--glibc-default`` skips the setting: timings then reflect a training loop,
where glibc reuses freed blocks, and peak memory figures are not reliable.

Peers: ``torch-ms-deform-attn`` (PyPI; the only package found with a CPU kernel of this op) is compared when it
imports, e.g. after ``FORCE_CPU=1 pip install --no-build-isolation --target DIR torch-ms-deform-attn`` and
``--peer-path DIR``; otherwise its row says "not installed". mmcv and transformers run this op on the CPU through a
grid_sample implementation equivalent to our reference.

Usage: ``python benchmarks/msda.py [--repeats 5] [--threads N] [--json benchmarks/results/msda.json] [--peer-path DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
LEVELS = ((45, 80), (23, 40), (12, 20), (6, 10))
FRAMES, HEADS, CHANNELS, POINTS, DECODER_QUERIES = 5, 8, 32, 4, 300
COMPILED = "seqformer compiled CPU"


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_mib(fn: Callable[[], object]) -> float:
    """MiB of resident memory above the level before ``fn`` at its peak (Linux only)."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # resets VmHWM to the current resident size
    before = _rss_kib("VmRSS")
    result = fn()
    peak = _rss_kib("VmHWM")
    del result
    return max(peak - before, 0) / 1024


def _inputs(queries_per_frame: int | None, dtype):
    """Inputs shaped like SeqFormer's: locations are reference points plus offsets of a few pixels.

    Encoder queries are the pixel centres of every level (each sampling all four levels around the same point);
    decoder queries have random reference points. Offsets are N(0, 2 px) around the reference on each level, the
    regime of a trained model (the initialisation puts points 1..4 px out), so memory access has the locality of the
    real workload rather than of uniformly random locations.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    shapes = torch.tensor(LEVELS, dtype=torch.int64)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    num_value = int(sizes.sum())
    if queries_per_frame is None:
        centres = []
        for height, width in LEVELS:
            ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
            centres.append(torch.stack([xs.flatten() / width, ys.flatten() / height], -1))
        reference = torch.cat(centres).expand(FRAMES, -1, -1)  # [N, S, 2]
    else:
        reference = torch.rand(FRAMES, queries_per_frame, 2, generator=generator)
    num_queries = reference.shape[1]
    value = torch.randn(FRAMES, num_value, HEADS, CHANNELS, generator=generator, dtype=dtype)
    loc_shape = (FRAMES, num_queries, HEADS, len(LEVELS), POINTS, 2)
    offsets = torch.randn(loc_shape, generator=generator) * 2.0
    normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1).float()  # (w, h) per level
    locations = (reference[:, :, None, None, None, :] + offsets / normalizer[None, None, None, :, None, :]).to(dtype)
    weights = torch.softmax(torch.randn(loc_shape[:-1], generator=generator, dtype=dtype).flatten(-2), -1)
    return value, shapes, starts, locations, weights.view(loc_shape[:-1])


def _implementations(peer_path: str | None) -> dict[str, Callable | str]:
    from seqformer.kernels import ms_deform_attn, ms_deform_attn_reference

    impls: dict[str, Callable | str] = {
        "reference (grid_sample)": ms_deform_attn_reference,
        COMPILED: lambda *a: ms_deform_attn(*a, backend="compiled"),
    }
    if peer_path:
        sys.path.insert(0, peer_path)
    try:
        from torch_ms_deform_attn import ms_deform_attn as peer  # type: ignore[import-not-found]

        impls["torch-ms-deform-attn 0.1.1"] = lambda v, s, i, loc, a: peer(v, s, i, loc, a)
    except ImportError as err:
        impls["torch-ms-deform-attn 0.1.1"] = f"not installed ({err})"
    return impls


def _call(fn: Callable, inputs, backward: bool) -> tuple[Callable[[], object], tuple]:
    """A forward (or forward+backward) call of ``fn`` on its own leaves of the inputs, and those leaves."""
    import torch

    value, shapes, starts, locations, weights = inputs
    leaves = ()
    grad_out = None
    if backward:
        leaves = tuple(t.detach().requires_grad_(True) for t in (value, locations, weights))
        value, locations, weights = leaves
        grad_out = torch.ones(value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype)

    def call():
        out = fn(value, shapes, starts, locations, weights)
        if backward:
            out.backward(grad_out)
        return out

    return call, leaves


def _measure_side_by_side(impls: dict[str, Callable], inputs, repeats: int, backward: bool) -> dict[str, dict]:
    """Wall and CPU milliseconds (median, minimum) and peak MiB of one call of each implementation.

    Repetitions are interleaved (one call of each implementation per round, after one warm-up call each), so a
    change of machine load during the measurement affects every implementation alike.
    """
    calls, leaves = {}, []
    for name, fn in impls.items():
        calls[name], its_leaves = _call(fn, inputs, backward)
        leaves.extend(its_leaves)

    def clear() -> None:  # gradients are dropped outside the timed region, so each call allocates them afresh
        for t in leaves:
            t.grad = None

    for call in calls.values():
        clear()
        call()  # warm-up (and the lazy build)
    times: dict[str, list[float]] = {name: [] for name in calls}
    cpu_times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            clear()
            start, cpu_start = time.perf_counter(), time.process_time()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
            cpu_times[name].append((time.process_time() - cpu_start) * 1e3)
    peaks = {}
    for name, call in calls.items():
        clear()  # no gradients held from earlier calls: the peak above the inputs is the call's own
        peaks[name] = _peak_mib(call)
    clear()
    return {
        name: {
            "ms": statistics.median(times[name]),
            "min_ms": min(times[name]),
            "cpu_ms": statistics.median(cpu_times[name]),
            "cpu_min_ms": min(cpu_times[name]),
            "peak_mib": peaks[name],
        }
        for name in calls
    }


def _speedups(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Ratios of medians within this run: compiled CPU against the reference and against each peer."""
    out: dict[str, dict[str, float]] = {}
    for ours in (r for r in rows if r["impl"] == COMPILED and "note" not in r):
        for other in (r for r in rows if r["shape"] == ours["shape"] and r["impl"] != COMPILED and "note" not in r):
            key = f"{ours['shape']} vs {other['impl']}"
            out[key] = {
                f"{mode}_{kind}": round(other[f"{mode}_{kind}"] / ours[f"{mode}_{kind}"], 2)
                for mode in ("fwd", "fwd_bwd")
                for kind in ("ms", "cpu_ms")
            }
    return out


def run(repeats: int, json_path: Path, peer_path: str | None, threads: int | None = None) -> list[dict]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    impls = _implementations(peer_path)
    runnable = {name: fn for name, fn in impls.items() if not isinstance(fn, str)}
    load_before = os.getloadavg()
    rows = []
    for shape_name, queries in (("encoder", None), ("decoder", DECODER_QUERIES)):
        inputs = _inputs(queries, torch.float32)
        figures = {name: {} for name in runnable}
        for mode, backward in (("fwd", False), ("fwd_bwd", True)):
            for name, measured in _measure_side_by_side(runnable, inputs, repeats, backward).items():
                for key, figure in measured.items():
                    figures[name][f"{mode}_{key}"] = round(figure, 1 if key == "peak_mib" else 2)
        for impl_name, fn in impls.items():
            row = {"shape": shape_name, "impl": impl_name, "queries_per_frame": inputs[3].shape[1]}
            row.update({"note": fn} if isinstance(fn, str) else figures[impl_name])
            rows.append(row)
    _print_table(rows)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "dtype": "float32",
        "repeats": repeats,
        "timing": "medians of interleaved repetitions (one call of each implementation per round) after a warm-up",
        _MMAP_ENV: os.environ.get(_MMAP_ENV, "glibc default (peak memory not reliable)"),
        # other work on the machine inflates wall times; compare rows of one run, not runs of different loads
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "shapes": {"levels": LEVELS, "frames": FRAMES, "heads": HEADS, "channels": CHANNELS, "points": POINTS},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "speedups": _speedups(rows), "rows": rows}, indent=2))
    print(f"\nwrote {json_path}")
    return rows


def _print_table(rows: list[dict]) -> None:
    """Medians; speed-ups of forward+backward against the reference and against the peer (wall / CPU time)."""
    header = f"{'shape':8} {'implementation':28} {'fwd ms':>8} {'fwd cpu':>8} {'fwd MiB':>8} "
    header += f"{'f+b ms':>8} {'f+b cpu':>8} {'f+b MiB':>8} {'vs ref':>7} {'vs peer wall/cpu':>17}"
    print(header)
    print("-" * len(header))
    base = {r["shape"]: r for r in rows if r["impl"].startswith("reference") and "note" not in r}
    peer = {r["shape"]: r for r in rows if r["impl"].startswith("torch-ms-deform-attn") and "note" not in r}
    for r in rows:
        if "note" in r:
            print(f"{r['shape']:8} {r['impl']:28} {r['note']}")
            continue
        versus_ref = base[r["shape"]]["fwd_bwd_ms"] / r["fwd_bwd_ms"]
        versus_peer = ""
        if r["shape"] in peer:
            p = peer[r["shape"]]
            versus_peer = f"{p['fwd_bwd_ms'] / r['fwd_bwd_ms']:.1f}x / {p['fwd_bwd_cpu_ms'] / r['fwd_bwd_cpu_ms']:.1f}x"
        print(
            f"{r['shape']:8} {r['impl']:28} {r['fwd_ms']:8.1f} {r['fwd_cpu_ms']:8.1f} {r['fwd_peak_mib']:8.1f} "
            f"{r['fwd_bwd_ms']:8.1f} {r['fwd_bwd_cpu_ms']:8.1f} {r['fwd_bwd_peak_mib']:8.1f} {versus_ref:6.1f}x "
            f"{versus_peer:>17}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/msda.json"), help="output JSON path")
    parser.add_argument("--peer-path", default=os.environ.get("MSDA_PEER_PATH"), help="extra sys.path for peers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--glibc-default", action="store_true", help=f"keep glibc's allocator settings (no {_MMAP_ENV}; see above)"
    )
    args = parser.parse_args()
    if os.environ.get(_MMAP_ENV) is None and sys.platform.startswith("linux") and not args.glibc_default:
        env = dict(os.environ, **{_MMAP_ENV: "65536"})
        return subprocess.call([sys.executable, *sys.argv], env=env)
    run(args.repeats, args.json, args.peer_path, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
