"""``seqformer tune SWEEP.yaml [--resume]``: a Ray Tune sweep, one Ray Train run per trial, tracked in MLflow."""

from __future__ import annotations

import argparse

HELP = "run (or resume) a Ray Tune sweep declared in a sweep YAML"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep YAML (an experiment with a tune: section)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to the sweep's base experiment")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are kept")


def run(args: argparse.Namespace) -> int:
    from seqformer.platform.config import load_experiment
    from seqformer.platform.data import is_prepared, prepare_experiment
    from seqformer.platform.tune import run_sweep, validate_sweep

    exp = load_experiment(args.sweep, args.overrides)
    validate_sweep(exp)
    if not is_prepared(exp):
        prepare_experiment(exp)
    summary = run_sweep(exp, resume=args.resume)
    print(open(summary["summary"]).read())
    print(f"best: {summary['best']} ({exp.tune.metric} = {summary['best_metric']})")
    if summary["registered"]:
        reg = summary["registered"]
        print(f"registered version {reg['version']}{' (now @champion)' if reg['champion'] else ''}")
    return 0
