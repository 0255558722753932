"""``seqformer run EXPERIMENT.yaml``: prepare if needed → train → evaluate → register, as the YAML declares.

This is the entry point of ``ray job submit --working-dir . -- seqformer run experiments/....yaml``.
"""

from __future__ import annotations

import argparse

HELP = "run a whole experiment: prepare (if needed), train, evaluate on the held-out split, register"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=10")


def run(args: argparse.Namespace) -> int:
    from seqformer.platform.config import load_experiment
    from seqformer.platform.pipeline import run_experiment

    exp = load_experiment(args.experiment, args.overrides)
    summary = run_experiment(exp)
    print(summary.table())
    for label, path in summary.paths.items():
        print(f"{label}: {path}")
    return 0
