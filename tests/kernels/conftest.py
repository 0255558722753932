"""Fixtures of the kernel tests."""

from __future__ import annotations

import pytest

from seqformer.kernels import _loader


@pytest.fixture
def isolated_loader(monkeypatch):
    """Lets a test build into another folder without disturbing this process's cached extensions.

    torch numbers JIT builds per extension name and rebuilds under a new name (``_v1``...) when the same name is
    built with other arguments (the build folder is one), so its bookkeeping is saved and restored as well.
    """
    from torch.utils import cpp_extension

    monkeypatch.setattr(_loader, "_loaded", {})
    monkeypatch.setattr(_loader, "_failed", {})
    monkeypatch.setattr(cpp_extension.JIT_EXTENSION_VERSIONER, "entries", {})
    return monkeypatch
