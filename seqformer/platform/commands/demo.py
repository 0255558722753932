"""``seqformer demo [--output DIR]``: generate data, prepare, train 2 workers, evaluate, register, infer."""

from __future__ import annotations

import argparse

HELP = "end-to-end CPU demo: synthetic data → Ray Data → Ray Train (2 workers) → evaluation → MLflow registry"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-output", help="folder for everything the demo writes")
    parser.add_argument("--no-infer", action="store_true", help="skip the batch-inference phase")
    parser.add_argument("overrides", nargs="*", help="dotted overrides of experiments/demo/tiny_cpu.yaml")


def run(args: argparse.Namespace) -> int:
    from seqformer.platform.demo import run_demo
    from seqformer.platform.pipeline import metrics_table

    summary = run_demo(args.output, args.overrides, infer=not args.no_infer)
    metrics = summary["metrics"]
    print("\nYouTube-VIS metrics on the synthetic val split (%):")
    print(metrics_table(metrics))
    print(f"\ntraining: {metrics['train_seconds']:.0f} s, {metrics.get('steps')} steps")
    print("\noutputs:")
    for label, path in summary["paths"].items():
        print(f"  {label}: {path}")
    print(f"\nbrowse the runs: {summary['mlflow_ui']}")
    return 0
