"""``seqformer train EXPERIMENT.yaml [key=value ...]``: distributed training with Ray Train, tracked in MLflow."""

from __future__ import annotations

import argparse

HELP = "train an experiment with Ray Train (DDP: gloo on CPU, NCCL on GPU), tracked in MLflow"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 resources.num_workers=2")
    parser.add_argument("--no-prepare", action="store_true", help="fail instead of preparing missing clip records")


def run(args: argparse.Namespace) -> int:
    from seqformer.platform.config import load_experiment
    from seqformer.platform.data import is_prepared, prepare_experiment
    from seqformer.platform.driver import train_experiment

    exp = load_experiment(args.experiment, args.overrides)
    if not is_prepared(exp):
        if args.no_prepare:
            raise FileNotFoundError(
                f"{exp.data.prepared_dir}: no manifest.json; run `seqformer prepare {args.experiment}` first"
            )
        prepare_experiment(exp)
    outcome = train_experiment(exp)
    print(f"trained {exp.name}: {outcome.metrics.get('step')} steps in {outcome.train_seconds:.0f} s")
    if outcome.checkpoint_dir:
        print(f"best checkpoint: {outcome.checkpoint_dir}")
    if outcome.model_version is not None:
        champion = " (now @champion)" if outcome.champion else ""
        print(f"registered {exp.tracking.registered_model_name} version {outcome.model_version}{champion}")
    return 0
