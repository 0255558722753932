"""SeqFormer on an NVIDIA GPU: R50 inference and one training step on a 5-frame 360x640 clip.

The same clip, instances and model as ``benchmarks/model.py`` (official R50 YouTube-VIS 2019 configuration, random
initialisation), on the GPU: inference in float32 and under bfloat16 autocast with the compiled CUDA attention
kernel and, for comparison, the reference backend; one training step (forward, loss, backward, AdamW) in float32 and
under bfloat16 autocast. Times are CUDA-synchronised wall milliseconds (median and minimum of ``--iters`` after
warm-ups); peak memory is ``torch.cuda.max_memory_allocated`` of the step. The compiled and reference inference
outputs are compared (largest absolute difference of logits, boxes and mask logits) so the table also shows the CUDA
kernel inside the whole model agrees with the reference. Prints a table and writes JSON.

Usage (on a machine with a GPU)::

    python benchmarks/model_cuda.py [--iters 10] [--json benchmarks/results/model_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import _clips_and_targets  # noqa: E402  (the CPU benchmark's clip and instances)


def _time(step, iters: int) -> dict:
    import torch

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return {
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_above_start_gib": (torch.cuda.max_memory_allocated() - base) / 2**30,
    }


def _infer(model, clips, precision: str, outputs: dict, backend: str) -> None:  # noqa: ANN001
    import torch

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        outputs[(backend, precision)] = model(clips)


def _train_step(model, criterion, optimizer, clips, targets, precision: str) -> None:  # noqa: ANN001
    import torch

    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        loss = criterion.total_loss(criterion(model(clips), targets))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()


def run(iters: int, json_path: Path) -> dict:
    import torch

    from seqformer.model import ModelConfig, build_criterion, build_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    clips, targets = _clips_and_targets(1, 5, 360, 640, 2)
    clips = [c.cuda() for c in clips]
    targets = [{**t, "valid": torch.ones(t["labels"].numel(), 5, dtype=torch.bool)} for t in targets]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    rows, outputs = [], {}
    torch.manual_seed(0)
    model = build_model(ModelConfig(size_divisibility=1)).cuda().eval()
    for backend in ("compiled", "reference"):
        for precision in ("float32", "bfloat16"):
            for module in model.modules():  # every MSDeformAttn reads its backend at call time
                if hasattr(module, "backend"):
                    module.backend = backend

            rows.append(
                {
                    "case": "r50 inference",
                    "backend": backend,
                    "precision": precision,
                    **_time(partial(_infer, model, clips, precision, outputs, backend), iters),
                }
            )
    agreement = {}
    for precision in ("float32", "bfloat16"):
        a, b = outputs[("compiled", precision)], outputs[("reference", precision)]
        agreement[precision] = {
            key: (a[key].float() - b[key].float()).abs().max().item()
            for key in ("pred_logits", "pred_boxes", "pred_masks")
        }
    del outputs

    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(msda_backend="compiled")).cuda().train()
        criterion = build_criterion(model.cfg)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

        step = partial(_train_step, model, criterion, optimizer, clips, targets, precision)
        rows.append({"case": "r50 training step", "backend": "compiled", "precision": precision, **_time(step, iters)})
        del model, optimizer, step
        torch.cuda.empty_cache()
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "clip": "5 x 3 x 360 x 640",
        "iters": iters,
        "rows": rows,
        "compiled_vs_reference_max_abs_difference": agreement,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/model_cuda.json"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write("model_cuda.py needs an NVIDIA GPU; use benchmarks/model.py on the CPU\n")
        return 2
    result = run(args.iters, args.json)
    print(f"{result['device']}, torch {result['torch']} (CUDA {result['cuda']}), clip {result['clip']}")
    print(f"{'case':18} {'backend':10} {'precision':9} {'ms':>9} {'min ms':>9} {'peak GiB':>9}")
    for r in result["rows"]:
        print(
            f"{r['case']:18} {r['backend']:10} {r['precision']:9} {r['ms_median']:9.1f} {r['ms_min']:9.1f} "
            f"{r['peak_gib']:9.2f}"
        )
    for precision, diffs in result["compiled_vs_reference_max_abs_difference"].items():
        print(f"compiled vs reference ({precision}): " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
