"""``seqformer config show EXPERIMENT.yaml [key=value ...]``: print the resolved config as YAML."""

from __future__ import annotations

import argparse

HELP = "show the resolved experiment config (base merged, overrides applied, defaults filled)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved config as YAML")
    show.add_argument("experiment", help="experiment YAML file")
    show.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: argparse.Namespace) -> int:
    import json

    from seqformer.platform.config import load_experiment, to_dict, to_yaml

    cfg = load_experiment(args.experiment, args.overrides)
    print(json.dumps(to_dict(cfg), indent=2) if args.json else to_yaml(cfg), end="")
    return 0
