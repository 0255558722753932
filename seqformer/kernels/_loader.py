"""Lazy JIT build and load of the compiled multi-scale deformable attention extension.

The extension is built with ``torch.utils.cpp_extension.load`` and ninja on first use, into one folder per torch and
CUDA version (torch itself rebuilds when sources or flags change), and the compiler output is appended to
``build.log`` in that folder. Two extensions exist: ``seqformer_msda_cpu`` (CPU kernels only; needs no CUDA) and
``seqformer_msda_cuda`` (CPU and CUDA kernels). ``python -m seqformer.kernels.build`` prebuilds them.

Environment:
    SEQFORMER_KERNELS_DIR: build root (default ``~/.cache/seqformer/kernels/<torch>_<cuda tag>``).
    TORCH_CUDA_ARCH_LIST: GPU architectures of the CUDA build; honoured when set. Without it and without a visible
        GPU the build targets ``DEFAULT_CUDA_ARCHS``.
    CUDA_HOME: the CUDA toolkit; when unset, ``/usr/local/cuda-<torch's CUDA version>`` or ``/usr/local/cuda``.
"""

from __future__ import annotations

import contextlib
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

import torch

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
BUILD_COMMAND = "python -m seqformer.kernels.build"
DEFAULT_CUDA_ARCHS = "8.0;9.0"
_CPU_SOURCES = ("bindings.cpp", "cpu/ms_deform_attn_cpu.cpp")
_CUDA_SOURCES = ("cuda/ms_deform_attn_cuda.cu",)
# -O3 and no -ffast-math: float64 results must match the reference at allclose's default tolerance. No -march: the
# CPU kernel carries its own AVX2 clone chosen at run time, so a shared build folder works on any x86-64 node.
_CFLAGS = ("-O3", "-fopenmp")
_LDFLAGS = ("-fopenmp",)
_CUDA_FLAGS = ("-O3", "-DWITH_CUDA")

_lock = threading.Lock()
_loaded: dict[bool, ModuleType] = {}
_failed: dict[bool, KernelBuildError] = {}


class KernelBuildError(RuntimeError):
    """The compiled extension could not be built or loaded; the message says why and how to fix it."""


def kernels_root() -> Path:
    """The build root: ``$SEQFORMER_KERNELS_DIR`` or a per torch/CUDA version folder in the user cache."""
    env = os.environ.get("SEQFORMER_KERNELS_DIR")
    if env:
        return Path(env).expanduser()
    cuda_tag = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    torch_tag = torch.__version__.split("+")[0]
    return Path("~/.cache/seqformer/kernels").expanduser() / f"torch{torch_tag}_{cuda_tag}"


def extension_name(with_cuda: bool) -> str:
    """Name of the extension module (and of its build folder)."""
    return "seqformer_msda_cuda" if with_cuda else "seqformer_msda_cpu"


def build_directory(with_cuda: bool) -> Path:
    """Folder holding the ninja file, objects, the shared library and ``build.log`` of one extension."""
    return kernels_root() / extension_name(with_cuda)


def build_log(with_cuda: bool) -> Path:
    """Path of the compiler log of one extension."""
    return build_directory(with_cuda) / "build.log"


def load_extension(with_cuda: bool = False) -> ModuleType:
    """Builds (first use) or loads (cached) the extension; later calls in the process return the same module.

    Args:
        with_cuda: build the CPU+CUDA extension instead of the CPU-only one.

    Returns:
        The extension module with ``forward``, ``backward`` and ``has_cuda``.

    Raises:
        KernelBuildError: the build or the import failed (the failure is remembered for the process); the message
            names the log file and the command to retry.
    """
    with _lock:
        if with_cuda in _loaded:
            return _loaded[with_cuda]
        if with_cuda in _failed:
            raise _failed[with_cuda]
        try:
            module = _build(with_cuda)
        except KernelBuildError as err:
            _failed[with_cuda] = err
            raise
        _loaded[with_cuda] = module
        return module


def _build(with_cuda: bool) -> ModuleType:
    from torch.utils import cpp_extension

    directory = build_directory(with_cuda)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "build.log"
    command = BUILD_COMMAND + (" --cuda" if with_cuda else "")
    sources = [str(CSRC / s) for s in _CPU_SOURCES + (_CUDA_SOURCES if with_cuda else ())]
    start = time.perf_counter()
    try:
        with _cuda_environment(with_cuda) as include_paths, _output_to(log_path, extension_name(with_cuda)):
            module = cpp_extension.load(
                name=extension_name(with_cuda),
                sources=sources,
                extra_cflags=list(_CFLAGS) + (["-DWITH_CUDA"] if with_cuda else []),
                extra_cuda_cflags=list(_CUDA_FLAGS),
                extra_ldflags=list(_LDFLAGS),
                extra_include_paths=include_paths,
                build_directory=str(directory),
                with_cuda=with_cuda,
                verbose=True,
            )
    except (RuntimeError, OSError, ImportError, IndexError, subprocess.CalledProcessError) as err:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\nFAILED: {type(err).__name__}: {err}\n")
        raise KernelBuildError(
            f"could not build the {extension_name(with_cuda)} extension ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[-1] if str(err).strip() else 'no message'}). "
            f"Compiler output: {log_path}. Fix the cause (a C++ compiler, ninja"
            f"{', the CUDA toolkit (CUDA_HOME)' if with_cuda else ''} must be installed) and run `{command}`, "
            'or pass backend="reference".'
        ) from err
    logger.debug("loaded %s from %s in %.1f s", extension_name(with_cuda), directory, time.perf_counter() - start)
    return module


@contextlib.contextmanager
def _output_to(log_path: Path, name: str) -> Iterator[None]:
    """Sends this process's stdout and stderr (file descriptors too, so ninja and the compiler) to the log."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {name} (torch {torch.__version__}) ====\n")
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


@contextlib.contextmanager
def _cuda_environment(with_cuda: bool) -> Iterator[list[str]]:
    """Yields the extra include paths; for a CUDA build also sets CUDA_HOME and the arch list when they are unset.

    Both settings are restored afterwards. torch's CUDA headers include ``cusparse.h``, which a CUDA 13 toolkit
    folder lacks and the ``nvidia/cu13`` wheel provides, hence the extra include path.
    """
    if not with_cuda:
        yield []
        return
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        raise KernelBuildError(f"torch {torch.__version__} is a CPU-only build; a CUDA extension needs a CUDA torch")
    saved = {key: os.environ.get(key) for key in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")}
    saved_home = cpp_extension.CUDA_HOME
    try:
        home = saved["CUDA_HOME"] or os.environ.get("CUDA_PATH") or _find_cuda_home()
        if home is None or not (Path(home) / "bin" / "nvcc").exists():
            raise KernelBuildError(
                f"no CUDA toolkit found (CUDA_HOME={home!r}); install CUDA {torch.version.cuda} and set CUDA_HOME "
                "to its folder (the one holding bin/nvcc)"
            )
        os.environ["CUDA_HOME"] = home
        cpp_extension.CUDA_HOME = home  # torch resolves it once, at import, possibly from a wrapper script's folder
        if not saved["TORCH_CUDA_ARCH_LIST"] and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
        logger.info(
            "CUDA build with CUDA_HOME=%s, TORCH_CUDA_ARCH_LIST=%s",
            home,
            os.environ.get("TORCH_CUDA_ARCH_LIST", "(from the visible GPUs)"),
        )
        yield _nvidia_include_paths()
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _find_cuda_home() -> str | None:
    for candidate in (f"/usr/local/cuda-{torch.version.cuda}", "/usr/local/cuda"):
        if (Path(candidate) / "bin" / "nvcc").exists():
            return candidate
    return None


def _nvidia_include_paths() -> list[str]:
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations or torch.version.cuda is None:
        return []
    major = torch.version.cuda.split(".")[0]
    paths = []
    for root in spec.submodule_search_locations:
        include = Path(root) / f"cu{major}" / "include"
        if include.is_dir():
            paths.append(str(include))
    return paths
