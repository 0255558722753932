"""Prebuild the compiled multi-scale deformable attention extension: ``python -m seqformer.kernels.build [--cuda]``.

Run once per node (or image) before starting Ray workers, so that they load a cached build instead of queueing on
the build lock. The CUDA extension is built when a GPU is visible or when ``--cuda`` is given (cross-compiling on a
machine without one needs the CUDA toolkit; ``TORCH_CUDA_ARCH_LIST`` picks the architectures).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from seqformer.kernels import _loader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltExtension:
    """One built extension: its module name, build folder, log and the seconds the build (or load) took."""

    name: str
    directory: Path
    log: Path
    seconds: float


def build_kernels(cuda: bool | None = None) -> list[BuiltExtension]:
    """Builds (or loads from the cache) the CPU extension and, when asked or a GPU is visible, the CUDA one.

    Args:
        cuda: True builds the CUDA extension too, False never, None when ``torch.cuda.is_available()``.

    Returns:
        The extensions built, CPU first.

    Raises:
        KernelBuildError: a build failed; the message names the log.
    """
    if cuda is None:
        cuda = torch.cuda.is_available()
    built = []
    for with_cuda in (False, True) if cuda else (False,):
        start = time.perf_counter()
        _loader.load_extension(with_cuda=with_cuda)
        built.append(
            BuiltExtension(
                name=_loader.extension_name(with_cuda),
                directory=_loader.build_directory(with_cuda),
                log=_loader.build_log(with_cuda),
                seconds=time.perf_counter() - start,
            )
        )
        logger.info("built %s in %.1f s into %s", built[-1].name, built[-1].seconds, built[-1].directory)
    return built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m seqformer.kernels.build`` and ``seqformer build-kernels``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cuda", dest="cuda", action="store_true", default=None, help="also build the CUDA kernels")
    group.add_argument("--cpu-only", dest="cuda", action="store_false", help="never build the CUDA kernels")


def run(args: argparse.Namespace) -> int:
    """Builds as asked and writes one line per extension to stdout; returns the exit code."""
    try:
        built = build_kernels(cuda=args.cuda)
    except _loader.KernelBuildError as err:
        sys.stderr.write(f"build failed: {err}\n")
        return 1
    for ext in built:
        sys.stdout.write(f"{ext.name}: ready in {ext.directory} ({ext.seconds:.1f} s; log {ext.log})\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of ``python -m seqformer.kernels.build``."""
    parser = argparse.ArgumentParser(prog="python -m seqformer.kernels.build", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
