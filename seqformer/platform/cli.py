"""The ``seqformer`` command line: one subcommand per module in ``seqformer.platform.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand -> (module in seqformer.platform.commands, issue that builds it, short description if missing)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("prepare", "#6", "turn YouTube-VIS / COCO into sharded Parquet clip records"),
    "train": ("train", "#7", "train an experiment with Ray Train"),
    "tune": ("tune", "#8", "run a Ray Tune sweep"),
    "evaluate": ("evaluate", "#5", "score a YouTube-VIS results file"),
    "infer": ("infer", "#9", "batch inference over a folder of videos"),
    "run": ("run", "#7", "prepare, train, evaluate and register an experiment"),
    "demo": ("demo", "#7", "the end-to-end CPU demo"),
    "convert-checkpoint": ("convert_checkpoint", "#4", "import an official SeqFormer checkpoint"),
    "build-kernels": ("build_kernels", "#3", "prebuild the deformable attention extension"),
    "split-annotations": ("split_annotations", "#5", "split a YouTube-VIS annotation file into train/val"),
    "config": ("config", "#2", "show the resolved experiment config"),
}

log = logging.getLogger(__name__)


class _Missing:
    """Stands in for a subcommand whose module is not built yet: says so and exits non-zero."""

    def __init__(self, name: str, module: str, issue: str, what: str, reason: str) -> None:
        self.name, self.module, self.issue, self.what, self.reason = name, module, issue, what, reason
        self.HELP = f"[not built yet: {issue}] {what}"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def run(self, args: argparse.Namespace) -> int:
        print(
            f"seqformer {self.name}: not built yet — seqformer.platform.commands.{self.module} does not exist "
            f"({self.reason}); it is tracked by issue {self.issue}.",
            file=sys.stderr,
        )
        return 2


def _load_command(name: str) -> object:
    module_name, issue, what = SUBCOMMANDS[name]
    full = f"seqformer.platform.commands.{module_name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name != full:
            raise
        return _Missing(name, module_name, issue, what, "module missing")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from seqformer import __version__

    parser = argparse.ArgumentParser(
        prog="seqformer",
        description="SeqFormer video instance segmentation: prepare data, train, tune, evaluate and serve on Ray + "
        "MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"seqformer {__version__}")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        command = _load_command(name)
        sub_parser = sub.add_parser(name, help=command.HELP, description=command.HELP)  # type: ignore[attr-defined]
        command.add_arguments(sub_parser)  # type: ignore[attr-defined]
        sub_parser.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``seqformer`` console script; returns the exit code."""
    from seqformer.platform.config import ConfigError
    from seqformer.platform.log import setup_logging

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    try:
        return int(args._command.run(args) or 0)
    except (ConfigError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"seqformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqformer {args.command}: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
