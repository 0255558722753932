"""``seqformer evaluate --gt ANNOTATIONS.json --results RESULTS.json [--out metrics.json] [--strict]``."""

from __future__ import annotations

import argparse

HELP = "score a YouTube-VIS results file against an annotation file (official metrics)"

# The paper's five numbers first, then the rest.
ORDER = ("AP", "AP50", "AP75", "AR1", "AR10", "APs", "APm", "APl", "AR100", "ARs", "ARm", "ARl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, help="YouTube-VIS annotation file (.json or .json.gz)")
    parser.add_argument(
        "--results",
        required=True,
        help="results file: list of video_id/category_id/score/segmentations (.json or .json.gz)",
    )
    parser.add_argument("--out", help="write the metrics (fractions, -1 = undefined) and per-category numbers here")
    parser.add_argument("--strict", action="store_true", help="fail on malformed entries instead of warning")
    parser.add_argument("--per-category", action="store_true", help="also print the per-category AP table")


def format_table(metrics: dict) -> str:
    """The 12 numbers as percentages (``-`` for -1), the paper's five first."""
    lines = [f"{'metric':<8}{'value':>8}"]
    for key in ORDER:
        value = metrics[key]
        lines.append(f"{key:<8}{'-' if value == -1 else f'{100 * value:.2f}':>8}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from seqformer.pipelines.evaluation import evaluate_files

    metrics = evaluate_files(args.gt, args.results, strict=args.strict)
    print(format_table(metrics))
    if args.per_category:
        print(f"\n{'category':<24}{'AP':>8}{'AP50':>8}{'AR100':>8}")
        for name, values in metrics["per_category"].items():
            cells = ["-" if values[k] == -1 else f"{100 * values[k]:.2f}" for k in ("AP", "AP50", "AR100")]
            print(f"{name:<24}" + "".join(f"{c:>8}" for c in cells))
    if metrics["warnings"]:
        print(f"\n{len(metrics['warnings'])} warning(s) about the input; see the log or --out JSON")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.out}")
    return 0
