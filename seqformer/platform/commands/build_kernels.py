"""``seqformer build-kernels``: prebuild the compiled multi-scale deformable attention extension."""

from __future__ import annotations

import argparse

HELP = "prebuild the deformable attention extension (CPU; CUDA when a GPU is visible or with --cuda)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cuda`` / ``--cpu-only``; by default CUDA is built when a GPU is visible (same as the kernels module)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cuda", dest="cuda", action="store_true", default=None, help="also build the CUDA kernels")
    group.add_argument("--cpu-only", dest="cuda", action="store_false", help="never build the CUDA kernels")


def run(args: argparse.Namespace) -> int:
    """Builds (or finds cached) extensions and prints where each lives; exit code 1 when a build fails."""
    from seqformer.kernels.build import run as run_build

    return run_build(args)
