"""Lazy build and load of the evaluator's compiled helpers (``csrc/ytvis_eval.cpp``).

The helpers use the Python C API only, so a built module imports without torch: the module name carries a digest of
the source, compiler flags and Python version, and a module already built under that name is imported directly.
Otherwise torch's ``cpp_extension.load`` builds it with ninja (torch is imported only then), with compiler output
appended to ``build.log`` in the build folder. ``-Wl,--as-needed`` drops the torch libraries that cpp_extension adds
to the link line, since nothing in the module uses them.

Environment:
    SEQFORMER_KERNELS_DIR: build root shared with :mod:`seqformer.kernels` (default ``~/.cache/seqformer/kernels``);
        the module lives in ``<root>/ytvis_eval_<python tag>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).resolve().parent / "csrc" / "ytvis_eval.cpp"
# -O2 is enough for integer run walking; no -march so a shared build folder works on any x86-64 node.
_CFLAGS = ("-O2", "-std=c++17")
_LDFLAGS = ("-Wl,--as-needed",)
FIX = (
    "install a C++ compiler (g++) and ninja (`pip install ninja`), then retry; "
    "to prebuild, run `python -c 'from seqformer.pipelines.evaluation._extension import load; load()'`"
)

_lock = threading.Lock()
_module: ModuleType | None = None
_error: ExtensionBuildError | None = None


class ExtensionBuildError(RuntimeError):
    """The evaluator's compiled helpers could not be built or imported; the message says why and how to fix it."""


def build_directory() -> Path:
    """Folder holding the ninja file, objects, the shared library and ``build.log``."""
    root = os.environ.get("SEQFORMER_KERNELS_DIR")
    base = Path(root).expanduser() if root else Path("~/.cache/seqformer/kernels").expanduser()
    return base / f"ytvis_eval_{sys.implementation.cache_tag}"


def module_name() -> str:
    """``seqformer_ytvis_eval_<digest>``: a changed source or flag gives a new name, so a stale build is never used."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(repr((_CFLAGS, _LDFLAGS, sys.version)).encode())
    return f"seqformer_ytvis_eval_{digest.hexdigest()[:16]}"


def load() -> ModuleType:
    """The compiled helpers, built on first use; later calls return the same module.

    Raises:
        ExtensionBuildError: the build or the import failed (remembered for the process); the message names the
            build log and the fix.
    """
    global _module, _error
    with _lock:
        if _module is not None:
            return _module
        if _error is not None:
            raise _error
        try:
            _module = _import_or_build()
        except ExtensionBuildError as err:
            _error = err
            raise
        return _module


def _import_or_build() -> ModuleType:
    name, directory = module_name(), build_directory()
    built = directory / f"{name}.so"
    if built.is_file():
        try:
            return _import(name, built)
        except ImportError as err:  # e.g. a build from another machine; rebuild below
            logger.warning("rebuilding %s: the existing build does not import (%s)", name, err)
    return _build(name, directory)


def _import(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _build(name: str, directory: Path) -> ModuleType:
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "build.log"
    start = time.perf_counter()
    logger.info("building the evaluator's compiled helpers in %s (once; compiler output in %s)", directory, log_path)
    try:
        from torch.utils import cpp_extension

        with _output_to(log_path, name):
            module = cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                extra_cflags=list(_CFLAGS),
                extra_ldflags=list(_LDFLAGS),
                build_directory=str(directory),
                with_cuda=False,
                verbose=True,
            )
    except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as err:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\nFAILED: {type(err).__name__}: {err}\n")
        last = str(err).strip().splitlines()[-1] if str(err).strip() else "no message"
        raise ExtensionBuildError(
            f"could not build the YouTube-VIS evaluator's compiled helpers ({type(err).__name__}: {last}). "
            f"Compiler output: {log_path}. Fix: {FIX}."
        ) from err
    logger.info("built %s in %.1f s", name, time.perf_counter() - start)
    return module


@contextlib.contextmanager
def _output_to(log_path: Path, name: str) -> Iterator[None]:
    """Sends this process's stdout and stderr (file descriptors too, so ninja and the compiler) to the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {name} ====\n")
        log.flush()
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
