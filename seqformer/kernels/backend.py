"""Choice of the multi-scale deformable attention backend: ``auto``, ``compiled`` or ``reference``.

``auto`` decides once per process and device type: the compiled extension when it builds/loads and has a kernel
for the device, else the pure-PyTorch reference. The decision is logged once with its reason (and, for the
reference, the command that fixes it). ``compiled`` raises when the extension cannot be loaded. There is no
per-call fallback: once decided, every call takes the same path, and a kernel error surfaces as an error.
The environment variable ``SEQFORMER_MSDA_BACKEND`` sets what ``auto`` means (``compiled`` or ``reference``).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import torch

from seqformer.kernels import _loader

logger = logging.getLogger(__name__)

Backend = Literal["auto", "compiled", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "compiled", "reference")
ENV_BACKEND = "SEQFORMER_MSDA_BACKEND"
_COMPILED_DEVICES = ("cpu", "cuda")

_lock = threading.Lock()
_auto_choices: dict[str, BackendChoice] = {}


@dataclass(frozen=True)
class BackendChoice:
    """The backend serving one device type, why, and the extension module when compiled."""

    name: Literal["compiled", "reference"]
    reason: str
    extension: ModuleType | None = None


def resolve_backend(backend: str, device: torch.device) -> BackendChoice:
    """The backend that serves a call on ``device``.

    Args:
        backend: ``"auto"``, ``"compiled"`` or ``"reference"``; ``"auto"`` defers to ``$SEQFORMER_MSDA_BACKEND``
            when that is set.
        device: the device of the value tensor.

    Raises:
        ValueError: unknown backend name (argument or environment variable).
        KernelBuildError: ``compiled`` was asked for and the extension cannot be built or loaded, or has no kernel
            for the device (a ``RuntimeError`` naming the build command and the log).
    """
    if backend not in BACKENDS:
        raise ValueError(f"ms_deform_attn: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get(ENV_BACKEND, "").strip()
        if env and env not in BACKENDS:
            raise ValueError(f"environment variable {ENV_BACKEND}={env!r} must be one of {BACKENDS} or unset")
        backend = env or "auto"
    if backend == "reference":
        return BackendChoice("reference", "asked for")
    if backend == "compiled":
        if device.type not in _COMPILED_DEVICES:
            raise _loader.KernelBuildError(
                f'ms_deform_attn: backend="compiled" has kernels for {_COMPILED_DEVICES}, not {device.type}; '
                'use backend="reference"'
            )
        module = _loader.load_extension(with_cuda=device.type == "cuda")
        return BackendChoice("compiled", "asked for", module)
    with _lock:
        if device.type not in _auto_choices:
            _auto_choices[device.type] = _decide(device.type)
        return _auto_choices[device.type]


def backend_in_use(device: str | torch.device = "cpu") -> BackendChoice:
    """What ``backend="auto"`` uses on ``device`` (deciding now, which may build the extension)."""
    return resolve_backend("auto", torch.device(device))


def _decide(device_type: str) -> BackendChoice:
    if device_type not in _COMPILED_DEVICES:
        choice = BackendChoice("reference", f"no compiled kernel for {device_type} devices")
        logger.info("ms_deform_attn on %s: reference backend (%s)", device_type, choice.reason)
        return choice
    with_cuda = device_type == "cuda"
    try:
        module = _loader.load_extension(with_cuda=with_cuda)
    except _loader.KernelBuildError as err:
        choice = BackendChoice("reference", str(err))
        logger.warning(
            "ms_deform_attn on %s: using the slow pure-PyTorch reference because the compiled kernel is unavailable: "
            "%s",
            device_type,
            err,
        )
        return choice
    reason = f"{_loader.extension_name(with_cuda)} loaded from {_loader.build_directory(with_cuda)}"
    logger.info("ms_deform_attn on %s: compiled backend (%s)", device_type, reason)
    return BackendChoice("compiled", reason, module)


def _forget_decisions() -> None:
    """Test hook: forget the per-process ``auto`` decisions (not the loaded extensions)."""
    with _lock:
        _auto_choices.clear()
