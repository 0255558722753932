"""How fast can the R50 training step be on this CPU? Its arithmetic against the machine's measured matmul peak.

Counts the floating-point operations of one R50 training step (the ``r50_train`` case of ``benchmarks/model.py``:
5-frame 360x640 clip, two instances, forward + loss + backward) with ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and convolutions; the deformable-attention op, element-wise work, norms and the optimizer are not
counted, so the count is a lower bound), then measures the float32 throughput this machine reaches on the same kind
of work: square ``torch.mm`` of several sizes and the step's largest linear layer shape, at the case's thread count.
The ratio is the least wall time the step can take here, before any overhead.

    python benchmarks/arithmetic.py [--threads 2] [--out benchmarks/results/arithmetic.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).parent / "results" / "arithmetic.json"


def count_step_flops() -> dict[str, float]:
    """FLOPs of one R50 training step by operator (``aten`` name -> FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.model import CASES, _clips_and_targets, _config
    from seqformer.model import build_criterion, build_model

    _, num_frames, h, w, num_clips, num_instances = CASES["r50_train"]
    torch.manual_seed(0)
    cfg = _config("r50_train", "auto")
    model = build_model(cfg).train()
    criterion = build_criterion(cfg)
    clips, targets = _clips_and_targets(num_clips, num_frames, h, w, num_instances)
    counter = FlopCounterMode(display=False)
    with counter:
        losses = criterion(model(clips), targets)
        criterion.total_loss(losses).backward()
    by_op: dict[str, float] = defaultdict(float)
    for op, flops in counter.get_flop_counts()["Global"].items():
        by_op[str(op).removeprefix("aten.")] += float(flops)
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1]))


def matmul_gflops(threads: int, repeats: int = 3) -> dict[str, float]:
    """Best float32 GFLOP/s of ``torch.mm`` / ``F.linear`` at a few shapes."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    shapes = {"mm 1024": (1024, 1024, 1024), "mm 2048": (2048, 2048, 2048), "mm 4096": (4096, 4096, 4096)}
    out: dict[str, float] = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        best = min(_timed(torch.mm, a, b) for _ in range(repeats))
        out[name] = 2 * m * k * n / best / 1e9
    # the encoder FFN's first layer on the 5-frame clip: 24,100 tokens x 256 -> 1024
    x, weight = torch.randn(24100, 256), torch.randn(1024, 256)
    F.linear(x, weight)
    best = min(_timed(F.linear, x, weight) for _ in range(repeats))
    out["linear 24100x256->1024"] = 2 * 24100 * 256 * 1024 / best / 1e9
    return out


def _timed(fn, *args) -> float:  # noqa: ANN001, ANN002
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    by_op = count_step_flops()
    total = sum(by_op.values())
    peaks = matmul_gflops(args.threads)
    best_peak = max(peaks.values())
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "torch": torch.__version__,
        "threads": args.threads,
        "load_avg_1min": [load_start, os.getloadavg()[0]],
        "step_tflop_counted": total / 1e12,
        "step_tflop_by_op": {op: flops / 1e12 for op, flops in by_op.items()},
        "matmul_gflops": peaks,
        "least_step_seconds_at_best_peak": total / (best_peak * 1e9),
    }
    print(f"R50 training step, counted matrix products and convolutions: {total / 1e12:.3f} TFLOP")
    print(f"{'operator':<28} {'TFLOP':>8}")
    for op, flops in by_op.items():
        print(f"{op:<28} {flops / 1e12:>8.3f}")
    print(f"\n{'float32 matmul, ' + str(args.threads) + ' threads':<28} {'GFLOP/s':>8}")
    for name, gflops in peaks.items():
        print(f"{name:<28} {gflops:>8.1f}")
    print(
        f"\nleast step time at the best measured rate ({best_peak:.0f} GFLOP/s): "
        f"{result['least_step_seconds_at_best_peak']:.1f} s (counted arithmetic only, no overhead)"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
