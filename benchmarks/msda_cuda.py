"""Benchmark of multi-scale deformable attention on an NVIDIA GPU: the compiled CUDA kernel vs the reference.

Same shapes as ``benchmarks/msda.py`` (SeqFormer on a 5-frame 360x640 clip: the encoder with every pixel a query and
the decoder with 300 queries per frame), in float32, float16 and bfloat16. Times are CUDA-event milliseconds of one
call (median and minimum of ``--repeats`` after warm-ups); peak memory is ``torch.cuda.max_memory_allocated`` during
the call above what was allocated before it (inputs excluded). Each row also gives the largest difference from the
float64 reference on the same inputs (relative to the largest magnitude of the output or gradient), so a fast row
is also a correct one. Prints a table and writes JSON.

Usage (on a machine with a GPU)::

    python benchmarks/msda_cuda.py [--repeats 20] [--json benchmarks/results/msda_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from msda import _inputs  # noqa: E402  (the CPU benchmark's input generator: same shapes, same locality)

DTYPES = ("float32", "float16", "bfloat16")


def _measure(fn, inputs, repeats: int, backward: bool) -> dict:
    import torch

    value, shapes, starts, locations, weights = inputs
    if backward:
        value, locations, weights = (t.detach().requires_grad_(True) for t in (value, locations, weights))
    grad_out = torch.ones(
        value.shape[0], locations.shape[1], value.shape[2] * value.shape[3], dtype=value.dtype, device=value.device
    )

    def call():
        out = fn(value, shapes, starts, locations, weights)
        if backward:
            out.backward(grad_out)
        return out

    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        for t in (value, locations, weights):
            t.grad = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    for t in (value, locations, weights):
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = call()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    grads = tuple(t.grad for t in (value, locations, weights)) if backward else ()
    return {
        "ms_median": statistics.median(times),
        "ms_min": min(times),
        "peak_mib": peak,
        "out": out.detach(),
        "grads": grads,
    }


def run(repeats: int, json_path: Path) -> list[dict]:
    import torch

    from seqformer.kernels import ms_deform_attn, ms_deform_attn_reference

    impls = {
        "reference (grid_sample)": ms_deform_attn_reference,
        "seqformer compiled CUDA": lambda *a: ms_deform_attn(*a, backend="compiled"),
    }
    rows = []
    for shape_name, queries in (("encoder", None), ("decoder", 300)):
        cpu_inputs = _inputs(queries, torch.float64)
        exact = _measure_exact(cpu_inputs)
        for dtype_name in DTYPES:
            dtype = getattr(torch, dtype_name)
            inputs = tuple((t.to(dtype) if t.is_floating_point() else t).cuda() for t in cpu_inputs)
            for backward in (False, True):
                for name, fn in impls.items():
                    measured = _measure(fn, inputs, repeats, backward)
                    error = _relative_error(measured.pop("out"), exact["out"])
                    grads = measured.pop("grads")
                    grad_error = max((_relative_error(g, e) for g, e in zip(grads, exact["grads"])), default=0.0)
                    rows.append(
                        {
                            "shape": shape_name,
                            "dtype": dtype_name,
                            "pass": "fwd+bwd" if backward else "fwd",
                            "implementation": name,
                            **measured,
                            "max_rel_error_out": error,
                            "max_rel_error_grads": grad_error if backward else None,
                        }
                    )
    speedups = {}
    for row in rows:
        if row["implementation"].startswith("seqformer"):
            ref = next(
                r
                for r in rows
                if r["implementation"].startswith("reference")
                and all(r[k] == row[k] for k in ("shape", "dtype", "pass"))
            )
            speedups[f"{row['shape']} {row['dtype']} {row['pass']}"] = ref["ms_median"] / row["ms_median"]
    props = torch.cuda.get_device_properties(0)
    result = {
        "device": props.name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "repeats": repeats,
        "rows": rows,
        "speedups_vs_reference": speedups,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return rows


def _relative_error(got, exact) -> float:
    """Largest absolute difference from the float64 result, relative to the result's largest magnitude."""
    return ((got.double().cpu() - exact).abs().max() / exact.abs().max().clamp_min(1e-30)).item()


def _measure_exact(cpu_inputs) -> dict:
    """float64 reference output and gradients on the GPU (ones as the output gradient)."""
    import torch

    from seqformer.kernels import ms_deform_attn_reference

    value, shapes, starts, locations, weights = (t.cuda() for t in cpu_inputs)
    value, locations, weights = (t.detach().requires_grad_(True) for t in (value, locations, weights))
    out = ms_deform_attn_reference(value, shapes, starts, locations, weights)
    out.backward(torch.ones_like(out))
    return {"out": out.detach().cpu(), "grads": tuple(t.grad.cpu() for t in (value, locations, weights))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/msda_cuda.json"))
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.stderr.write(
            "msda_cuda.py needs an NVIDIA GPU (torch.cuda.is_available() is False); use benchmarks/msda.py on the CPU\n"
        )
        return 2
    rows = run(args.repeats, args.json)
    header = (
        f"{'shape':8} {'dtype':9} {'pass':8} {'implementation':26} {'ms':>9} {'min ms':>9} {'peak MiB':>9} "
        f"{'rel err':>9} {'grad err':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        grad = "" if r["max_rel_error_grads"] is None else f"{r['max_rel_error_grads']:.1e}"
        print(
            f"{r['shape']:8} {r['dtype']:9} {r['pass']:8} {r['implementation']:26} {r['ms_median']:9.3f} "
            f"{r['ms_min']:9.3f} {r['peak_mib']:9.1f} {r['max_rel_error_out']:9.1e} {grad:>9}"
        )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
