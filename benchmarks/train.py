"""Training throughput: clips per second and peak memory of Ray Train runs on this machine.

Cases:
- ``tiny_1w`` / ``tiny_2w``: the CPU demo model (experiments/demo/tiny_cpu.yaml) on synthetic 96×96 videos, 1 and 2
  Ray Train workers (DDP over gloo, one CPU and one torch thread each), a fixed number of optimiser steps.
- ``r50_1w``: the official R50 model (experiments/base, 256-dim, 6+6 layers, 300 queries) at the official clip size
  (5 frames, official multi-scale augmentation on synthetic 360×640 videos), one worker with 2 threads, 2 steps of
  batch 1.

Clips per second are the training loop's own figure (steps × batch × workers over the loop's wall time, first step
included, data loading included); peak memory is rank 0's peak RSS. Prints a table and writes JSON.

Usage: ``python benchmarks/train.py [--cases tiny_1w,tiny_2w,r50_1w] [--steps 40] [--json PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo" / "tiny_cpu.yaml"


def _case_overrides(case: str, steps: int) -> list[str]:
    common = ["train.time_budget_s=null", "train.lr_drop_unit=step", "eval.enabled=false", "tracking.enabled=false",
              "train.log_every_s=10", f"train.checkpoint_every_steps={10**6}", "data.synthetic.val_videos=1"]
    if case == "tiny_1w":
        return [*common, f"train.max_steps={steps}", "resources.num_workers=1"]
    if case == "tiny_2w":
        return [*common, f"train.max_steps={steps}", "resources.num_workers=2"]
    if case == "r50_1w":
        official = [
            "model.backbone=resnet50", "model.frozen_batch_norm=true", "model.freeze_stem=true", "model.hidden_dim=256",
            "model.dim_feedforward=1024", "model.enc_layers=6", "model.dec_layers=6", "model.num_queries=300",
            "model.num_classes=42", "model.num_frames=5", "model.dropout=0.1", "model.mask_feat_channels=null",
            "data.max_size=768", "data.train_scales=[288, 320, 352, 392, 416, 448, 480, 512]",
            "data.max_train_size=768", "data.crop_scales=[400, 500, 600]", "data.crop_min=384", "data.crop_max=600",
            "data.synthetic.height=360", "data.synthetic.width=640", "data.synthetic.train_videos=4",
            "data.synthetic.min_frames=10", "data.synthetic.max_frames=12",
            "train.batch_size=1", "train.lr=2.0e-4", "train.lr_backbone=2.0e-5", "resources.cpus_per_worker=2",
        ]
        return [*common, *official, "train.max_steps=2", "resources.num_workers=1"]
    raise ValueError(f"unknown case {case!r}; use tiny_1w, tiny_2w or r50_1w")


def run_case(case: str, steps: int) -> dict:
    """One case in a fresh process (so peaks and Ray instances do not mix)."""
    with tempfile.TemporaryDirectory(prefix=f"bench-train-{case}-") as tmp:
        code = (
            "import json, sys\n"
            "from pathlib import Path\n"
            "from seqformer.platform.log import setup_logging\n"
            "from seqformer.platform.demo import demo_experiment\n"
            "from seqformer.platform.data import prepare_experiment\n"
            "from seqformer.platform.driver import train_experiment\n"
            "setup_logging('WARNING')\n"
            f"exp = demo_experiment(Path({tmp!r}), {_case_overrides(case, steps)!r}, Path({str(DEMO)!r}))\n"
            "prepare_experiment(exp)\n"
            "out = train_experiment(exp)\n"
            "print('RESULT ' + json.dumps(out.metrics))\n"
        )
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - started
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"case {case} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    metrics = json.loads(line[len("RESULT "):])
    return {
        "case": case,
        "steps": metrics["step"],
        "clips_per_second": metrics["summary/clips_per_second"],
        "train_seconds": metrics["summary/train_seconds"],
        "peak_memory_gb": metrics["summary/peak_memory_gb"],
        "process_wall_seconds": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tiny_1w,tiny_2w,r50_1w")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps of the tiny cases")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "train.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = [run_case(case, args.steps) for case in args.cases.split(",")]
    print(f"{'case':<10} {'steps':>6} {'clips/s':>9} {'loop s':>8} {'peak GB':>8} {'process s':>10}")
    for r in rows:
        print(f"{r['case']:<10} {r['steps']:>6} {r['clips_per_second']:>9.2f} {r['train_seconds']:>8.1f} "
              f"{r['peak_memory_gb']:>8.2f} {r['process_wall_seconds']:>10.1f}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_before": load_before,
                    "load_after": os.getloadavg()},
        "rows": rows,
    }, indent=2))
    print(f"wrote {args.json} (load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
