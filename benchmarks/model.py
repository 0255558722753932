"""SeqFormer CPU benchmark: R50 inference and training step on a 5-frame 360x640 clip, tiny and demo training steps.

Every case runs in a fresh spawned child process, so its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Each case runs one untimed warm-up iteration (the
kernel extension loads and oneDNN creates its primitives there), then ``--iters`` timed ones; the table shows the
best wall time, the process CPU time (user + system, all threads) of that iteration and the 1-minute load average
of the machine at the start and end of the case, because the machine is shared and wall times depend on it.

Inference runs as the official ``inference.py`` does (no padding: ``size_divisibility=1``) with the compiled
attention kernel and, for comparison, the reference backend (``r50_infer_ref``), one after the other in the same
run; ``r50_infer_pad32`` pads to a multiple of 32 as the official evaluation branch does. ``r50_train_ckpt`` is the
training step with ``checkpoint_encoder=True`` (encoder activations recomputed in the backward),
``r50_train_ckpt_fast_dropout`` adds ``fast_dropout=True``. The ``*_bf16`` cases run the forward (and the loss) under
CPU bfloat16 autocast, as ``train.amp: bf16`` does (float32 weights, gradients and AdamW); every other case is
float32.

Process settings (no value the model computes depends on them), recorded in each result:

- ``keep_freed_memory`` (default; ``--glibc-default`` skips it): :func:`seqformer.model.runtime.keep_freed_memory`,
  so the 26-104 MB intermediates reuse mapped memory instead of faulting in fresh pages on every step;
- ``OMP_WAIT_POLICY=PASSIVE`` (default; ``--omp-active`` keeps libgomp's spinning default): idle OpenMP threads
  sleep instead of spinning. On this shared 2-core machine a spinning thread steals the core its partner needs
  (R50 inference at load ~5: 24-58 s wall / 13-17 CPU-s spinning, 5.4 s / 9.0 CPU-s passive);
- ``--fused-adamw`` builds ``AdamW(fused=True)`` (the platform builds the default for-loop AdamW; fused differs by
  float32 rounding, ~6e-8 relative per step); ``--thp`` starts the children with ``THP_MEM_ALLOC_ENABLE=1``.

Usage::

    python benchmarks/model.py [--iters 2] [--cases r50_infer,r50_infer_ref,r50_train,...] [--glibc-default]
        [--omp-active] [--fused-adamw] [--thp]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "model.json"

# case -> (threads, frames, height, width, clips, instances per clip)
CASES = {
    "r50_infer": (2, 5, 360, 640, 1, 2),
    "r50_infer_ref": (2, 5, 360, 640, 1, 2),
    "r50_infer_pad32": (2, 5, 360, 640, 1, 2),
    "r50_train": (2, 5, 360, 640, 1, 2),
    "r50_train_ckpt": (2, 5, 360, 640, 1, 2),
    "r50_train_fast_dropout": (2, 5, 360, 640, 1, 2),
    "r50_train_ckpt_fast_dropout": (2, 5, 360, 640, 1, 2),
    "r50_train_bf16": (2, 5, 360, 640, 1, 2),
    "r50_infer_bf16": (2, 5, 360, 640, 1, 2),
    "tiny_train": (2, 2, 64, 96, 1, 2),
    "demo_train": (1, 3, 96, 96, 2, 2),
}
# inference case -> (attention backend, size_divisibility)
INFER = {
    "r50_infer": ("compiled", 1),
    "r50_infer_ref": ("reference", 1),
    "r50_infer_pad32": ("compiled", 32),
    "r50_infer_bf16": ("compiled", 1),
}
TARGETS = {
    "r50_infer": (4.4, None),
    "r50_train": (10.0, 6.0),
    "r50_train_ckpt": (10.0, 6.0),
    "r50_train_fast_dropout": (10.0, 6.0),
    "r50_train_ckpt_fast_dropout": (10.0, 6.0),
    "r50_train_bf16": (10.0, 6.0),
    "r50_infer_bf16": (4.4, None),
}


def _config(case: str, backend: str):  # noqa: ANN202
    from seqformer.model import ModelConfig

    if case == "tiny_train":
        return ModelConfig(
            hidden_dim=32, dim_feedforward=64, enc_layers=1, dec_layers=1, num_queries=12, num_frames=2,
            msda_backend=backend,
        )  # fmt: skip
    if case == "demo_train":  # an early demo model (ResNet-18); the current demo's speed: benchmarks/train.py
        return ModelConfig(
            backbone="resnet18", frozen_batch_norm=False, freeze_stem=False, hidden_dim=64, dim_feedforward=256,
            enc_layers=2, dec_layers=2, nheads=8, num_queries=20, num_classes=5, num_frames=3, dropout=0.0,
            mask_feat_channels=8, msda_backend=backend,
        )  # fmt: skip
    if case == "r50_train_ckpt":  # encoder activations recomputed in the backward (same values, less memory)
        return ModelConfig(msda_backend=backend, checkpoint_encoder=True)
    if case == "r50_train_ckpt_fast_dropout":  # both of the above
        return ModelConfig(msda_backend=backend, checkpoint_encoder=True, fast_dropout=True)
    if case == "r50_train_fast_dropout":  # dropout masks from 16-bit lanes of generator words (not F.dropout's)
        return ModelConfig(msda_backend=backend, fast_dropout=True)
    return ModelConfig(msda_backend=backend)


def _clips_and_targets(num_clips: int, num_frames: int, h: int, w: int, num_instances: int):  # noqa: ANN202
    """Random frames and rectangle instances (the same in every frame) scaled to the clip size."""
    import torch

    g = torch.Generator().manual_seed(0)
    clips, targets = [], []
    for _ in range(num_clips):
        clips.append(torch.randn(num_frames, 3, h, w, generator=g))
        masks = torch.zeros(num_instances, num_frames, h, w, dtype=torch.bool)
        boxes = torch.zeros(num_instances, num_frames, 4)
        for i in range(num_instances):
            y0, x0 = h * (1 + i) // 9, w * (1 + 2 * i) // 9
            y1, x1 = y0 + h * 4 // 9, x0 + w * 3 // 9
            masks[i, :, y0:y1, x0:x1] = True
            boxes[i, :] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
        targets.append({"labels": torch.arange(1, num_instances + 1), "boxes": boxes, "masks": masks})
    return clips, targets


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def _run_case(case: str, backend: str, iters: int, fused_adamw: bool, keep_memory: bool, queue) -> None:  # noqa: ANN001
    import torch

    from seqformer.model import build_criterion, build_model, param_groups
    from seqformer.model.runtime import keep_freed_memory
    from seqformer.platform.train_loop import autocast_context

    kept = keep_freed_memory() if keep_memory else False
    threads, num_frames, h, w, num_clips, num_instances = CASES[case]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    divisor = 32
    if case in INFER:
        backend, divisor = INFER[case] if backend == "auto" else (backend, INFER[case][1])
    cfg = _config(case, backend)
    clips, targets = _clips_and_targets(num_clips, num_frames, h, w, num_instances)
    model = build_model(cfg)
    # *_bf16 cases: the training loop's own autocast for train.amp: bf16 (float32 weights and optimizer)
    autocast = autocast_context("bf16" if case.endswith("_bf16") else "none", torch.device("cpu"))
    if case in INFER:
        model.eval()
        mask_size = ((h + divisor - 1) // divisor * divisor // 4, (w + divisor - 1) // divisor * divisor // 4)

        def step() -> None:
            with torch.no_grad(), autocast:
                out = model(clips, size_divisibility=divisor)
            assert out["pred_masks"].shape[-2:] == mask_size, out["pred_masks"].shape

    else:
        model.train()
        criterion = build_criterion(cfg)
        optimizer = torch.optim.AdamW(
            param_groups(model, 2e-4, 2e-5, 0.1), weight_decay=1e-4, **({"fused": True} if fused_adamw else {})
        )

        def step() -> None:
            with autocast:
                losses = criterion(model(clips), targets)
                total = criterion.total_loss(losses)
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()

    start = time.perf_counter()
    step()  # warm-up: extension load, oneDNN primitive creation, first-touch allocations
    warmup = time.perf_counter() - start
    times, user_times, sys_times, loads = [], [], [], []
    for _ in range(iters):
        loads.append(os.getloadavg()[0])
        (user, system), start = _cpu_seconds(), time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        user_end, sys_end = _cpu_seconds()
        user_times.append(user_end - user)
        sys_times.append(sys_end - system)
    loads.append(os.getloadavg()[0])
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from seqformer.kernels import backend_in_use

    best = min(range(iters), key=times.__getitem__)
    queue.put(
        {
            "case": case,
            "backend": backend,
            "backend_in_use": backend if backend != "auto" else backend_in_use().name,
            "threads": threads,
            "size_divisibility": divisor,
            "keep_freed_memory": kept,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default (active spinning)"),
            "warmup_s": warmup,
            "fused_adamw": fused_adamw,
            "thp": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
            "times_s": times,
            "user_s": user_times,
            "sys_s": sys_times,
            "best_s": times[best],
            "best_cpu_s": user_times[best] + sys_times[best],
            "best_sys_s": sys_times[best],
            "load_avg_1min": loads,
            "peak_rss_gib": peak_kib / 2**20,
            "peak_rss_gb": peak_kib * 1024 / 1e9,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "compiled", "reference"])
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--fused-adamw", action="store_true", help="AdamW(fused=True) in the training cases")
    parser.add_argument("--thp", action="store_true", help="children run with THP_MEM_ALLOC_ENABLE=1")
    parser.add_argument("--glibc-default", action="store_true", help="skip runtime.keep_freed_memory()")
    parser.add_argument("--omp-active", action="store_true", help="keep libgomp's spin-waiting (no OMP_WAIT_POLICY)")
    args = parser.parse_args()
    if args.omp_active:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when a child loads torch
    if args.thp:
        os.environ["THP_MEM_ALLOC_ENABLE"] = "1"  # read by PyTorch's allocator at the child's first allocation
    else:
        os.environ.pop("THP_MEM_ALLOC_ENABLE", None)
    ctx = mp.get_context("spawn")
    rows = []
    for case in args.cases.split(","):
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        queue = ctx.Queue()
        proc = ctx.Process(
            target=_run_case,
            args=(case, args.backend, args.iters, args.fused_adamw, not args.glibc_default, queue),
        )
        proc.start()
        row = queue.get()  # before join: a child blocks on exit until its queue is drained
        proc.join()
        if proc.exitcode != 0:
            print(f"{case}: failed with exit code {proc.exitcode}")
            continue
        rows.append(row)
    section = (
        args.backend
        + ("+glibc_default" if args.glibc_default else "+keep_freed_memory")
        + ("+omp_active" if args.omp_active else "+omp_passive")
        + ("+fused_adamw" if args.fused_adamw else "")
        + ("+thp" if args.thp else "")
    )
    print(f"settings: {section}")
    header = (
        f"{'case':<15} {'backend':<9} {'thr':>3} {'best s':>7} {'cpu s':>7} {'sys s':>6} {'peak GB':>8} {'load':>10}"
        "  target"
    )
    print(header)
    for r in rows:
        t_s, t_mem = TARGETS.get(r["case"], (None, None))
        target = "" if t_s is None else f"<= {t_s} s" + ("" if t_mem is None else f", <= {t_mem} GB")
        load = f"{min(r['load_avg_1min']):.1f}-{max(r['load_avg_1min']):.1f}"
        print(
            f"{r['case']:<15} {r['backend_in_use']:<9} {r['threads']:>3} {r['best_s']:>7.2f} {r['best_cpu_s']:>7.2f} "
            f"{r['best_sys_s']:>6.2f} {r['peak_rss_gb']:>8.2f} {load:>10}  {target}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    previous = existing.get(section, {})
    results = {r["case"]: r for r in previous.get("results", [])}
    results.update({r["case"]: r for r in rows})
    existing[section] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "results": list(results.values()),
    }
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
