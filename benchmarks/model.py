"""SeqFormer CPU benchmark: R50 inference and training step on a 5-frame 360x640 clip, and the tiny training step.

Peak memory is the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) measured in a
fresh child process per case, so cases do not inherit each other's peak. Usage::

    python benchmarks/model.py [--backend reference|compiled|auto] [--iters 2] [--cases infer,train,tiny]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "model.json"


def _clip_and_targets(num_frames: int, h: int, w: int, num_instances: int):
    import torch

    g = torch.Generator().manual_seed(0)
    clip = torch.randn(num_frames, 3, h, w, generator=g)
    masks = torch.zeros(num_instances, num_frames, h, w, dtype=torch.bool)
    boxes = torch.zeros(num_instances, num_frames, 4)
    for i in range(num_instances):
        y0, x0, y1, x1 = 40 + 60 * i, 80 + 150 * i, 200 + 60 * i, 300 + 150 * i
        masks[i, :, y0:y1, x0:x1] = True
        boxes[i, :] = torch.tensor([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h])
    targets = [{"labels": torch.arange(1, num_instances + 1), "boxes": boxes, "masks": masks}]
    return [clip], targets


def _run_case(case: str, backend: str, iters: int, queue) -> None:
    import torch

    from seqformer.model import ModelConfig, build_criterion, build_model, param_groups

    torch.set_num_threads(2)
    torch.manual_seed(0)
    if case == "tiny_train":
        cfg = ModelConfig(
            hidden_dim=32,
            dim_feedforward=64,
            enc_layers=1,
            dec_layers=1,
            num_queries=12,
            num_frames=2,
            msda_backend=backend,
        )
        clips, targets = _clip_and_targets(2, 64, 96, 2)
    else:
        cfg = ModelConfig(msda_backend=backend)
        clips, targets = _clip_and_targets(5, 360, 640, 2)
    model = build_model(cfg)
    times = []
    if case == "r50_infer":
        model.eval()
        for _ in range(iters):
            start = time.perf_counter()
            with torch.no_grad():
                out = model(clips)
            times.append(time.perf_counter() - start)
        assert out["pred_masks"].shape[-2:] == (96, 160)
    else:
        model.train()
        criterion = build_criterion(cfg)
        optimizer = torch.optim.AdamW(param_groups(model, 2e-4, 2e-5, 0.1), weight_decay=1e-4)
        for _ in range(iters):
            start = time.perf_counter()
            losses = criterion(model(clips), targets)
            total = criterion.total_loss(losses)
            optimizer.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            times.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from seqformer.kernels import backend_in_use

    try:
        used = str(backend_in_use())
    except Exception as err:  # report, do not hide: the table shows what failed
        used = f"unknown ({type(err).__name__})"
    queue.put(
        {
            "case": case,
            "backend": backend,
            "backend_in_use": used,
            "times_s": times,
            "best_s": min(times),
            "peak_rss_gib": peak_kib / 2**20,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "compiled", "reference"])
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--cases", default="r50_infer,r50_train,tiny_train")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for case in args.cases.split(","):
        queue = ctx.Queue()
        proc = ctx.Process(target=_run_case, args=(case, args.backend, args.iters, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{case}: failed with exit code {proc.exitcode}")
            continue
        rows.append(queue.get())
    targets = {"r50_infer": (4.4, None), "r50_train": (10.0, 6.0)}
    print(f"{'case':<12} {'backend':<10} {'best s':>8} {'peak GiB':>9}  target")
    for r in rows:
        t_s, t_mem = targets.get(r["case"], (None, None))
        target = "" if t_s is None else f"<= {t_s} s" + ("" if t_mem is None else f", <= {t_mem} GB")
        print(f"{r['case']:<12} {r['backend']:<10} {r['best_s']:>8.2f} {r['peak_rss_gib']:>9.2f}  {target}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[args.backend] = {"machine": platform.processor() or platform.machine(), "threads": 2, "results": rows}
    out.write_text(json.dumps(existing, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
