"""Backend choice: ``auto`` decides once and logs why, ``compiled`` raises with the fix, the environment default."""

from __future__ import annotations

import logging

import pytest
import torch

from seqformer.kernels import KernelBuildError, backend, backend_in_use, ms_deform_attn
from tests.kernels.helpers import Case, make_inputs

SMALL = Case(batch=1, heads=2, channels=4, queries=5, levels=((3, 4),), points=2)


@pytest.fixture
def fresh_decisions(monkeypatch):
    """Forget the per-process decisions before and after the test."""
    monkeypatch.delenv(backend.ENV_BACKEND, raising=False)
    backend._forget_decisions()
    yield
    backend._forget_decisions()


@pytest.fixture
def broken_build(isolated_loader, tmp_path):
    """A process where the extension cannot build: empty build folder and a compiler that does not exist."""
    isolated_loader.setenv("SEQFORMER_KERNELS_DIR", str(tmp_path / "kernels"))
    isolated_loader.setenv("CXX", str(tmp_path / "no-such-compiler"))
    return tmp_path / "kernels" / "seqformer_msda_cpu" / "build.log"


def test_environment_variable_sets_what_auto_means(fresh_decisions, monkeypatch) -> None:
    monkeypatch.setenv(backend.ENV_BACKEND, "reference")
    assert backend_in_use("cpu").name == "reference"
    monkeypatch.setenv(backend.ENV_BACKEND, "quick")
    with pytest.raises(ValueError, match="SEQFORMER_MSDA_BACKEND='quick' must be one of"):
        backend_in_use("cpu")


def test_explicit_backend_wins_over_environment(fresh_decisions, monkeypatch) -> None:
    monkeypatch.setenv(backend.ENV_BACKEND, "compiled")
    assert backend.resolve_backend("reference", torch.device("cpu")).name == "reference"


def test_compiled_unavailable_raises_with_build_command_and_log(fresh_decisions, broken_build) -> None:
    with pytest.raises(KernelBuildError) as info:
        ms_deform_attn(*make_inputs(SMALL), backend="compiled")
    message = str(info.value)
    assert "python -m seqformer.kernels.build" in message and str(broken_build) in message
    assert isinstance(info.value, RuntimeError) and broken_build.exists()
    assert "FAILED" in broken_build.read_text()


def test_auto_falls_back_once_with_a_logged_reason(fresh_decisions, broken_build, caplog) -> None:
    inputs = make_inputs(SMALL)
    with caplog.at_level(logging.INFO, logger="seqformer.kernels.backend"):
        first = ms_deform_attn(*inputs)
        second = ms_deform_attn(*inputs)
    torch.testing.assert_close(first, second)
    records = [r for r in caplog.records if r.name == "seqformer.kernels.backend"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "reference" in records[0].getMessage() and "python -m seqformer.kernels.build" in records[0].getMessage()
    assert backend_in_use("cpu").name == "reference"


@pytest.mark.build
def test_auto_picks_compiled_on_cpu_and_logs_once(fresh_decisions, caplog) -> None:
    inputs = make_inputs(SMALL)
    with caplog.at_level(logging.INFO, logger="seqformer.kernels.backend"):
        ms_deform_attn(*inputs)
        ms_deform_attn(*inputs)
    records = [r for r in caplog.records if r.name == "seqformer.kernels.backend"]
    assert len(records) == 1 and "compiled backend" in records[0].getMessage()
    choice = backend_in_use("cpu")
    assert choice.name == "compiled" and choice.extension is not None and "seqformer_msda_cpu" in choice.reason


def test_devices_without_a_kernel_use_the_reference_under_auto(fresh_decisions) -> None:
    assert backend_in_use("meta").name == "reference"
    with pytest.raises(KernelBuildError, match="not meta"):
        backend.resolve_backend("compiled", torch.device("meta"))
