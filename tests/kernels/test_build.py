"""Building the extension: the prebuild command and a compile-only check of the CUDA sources (nothing launched)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqformer.kernels import _loader

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.build
def test_build_kernels_command_prints_where_the_extension_is(capsys) -> None:
    from seqformer.platform.cli import main

    assert main(["build-kernels", "--cpu-only"]) == 0
    out = capsys.readouterr().out
    assert f"seqformer_msda_cpu: ready in {_loader.build_directory(False)}" in out and "build.log" in out


def _cuda_toolkit_missing() -> str | None:
    if torch.version.cuda is None:
        return "Requires: [a CUDA build of torch]"
    home = os.environ.get("CUDA_HOME") or _loader._find_cuda_home()
    if home is None or shutil.which("ninja") is None:
        return "Requires: [the CUDA toolkit (CUDA_HOME) and ninja]"
    return None


_COMPILE_AND_IMPORT = """
import torch
from seqformer.kernels import _loader, ms_deform_attn_reference
from tests.kernels.helpers import Case, make_inputs

module = _loader.load_extension(with_cuda=True)
assert module.has_cuda()
log = _loader.build_log(True).read_text()
assert "ms_deform_attn_cuda.cu" in log and "sm_80" in log, log[-2000:]
# the CPU kernels of the CUDA build run without a GPU
inputs = make_inputs(Case(batch=1, heads=2, channels=8, queries=9, levels=((4, 5), (2, 3)), points=2))
torch.testing.assert_close(module.forward(*inputs), ms_deform_attn_reference(*inputs))
print("compiled and imported")
"""


@pytest.mark.build
@pytest.mark.skipif(_cuda_toolkit_missing() is not None, reason=str(_cuda_toolkit_missing()))
def test_cuda_sources_compile_and_the_cuda_build_imports(tmp_path_factory) -> None:
    # A child process: this sm_80-only build must not become the CUDA extension of the test process (on a GPU
    # machine of another architecture its kernels would not run). One architecture keeps the compile to a few
    # minutes on two cores; the folder is per test session.
    env = {
        **os.environ,
        "SEQFORMER_KERNELS_DIR": str(tmp_path_factory.getbasetemp() / "msda-cuda-build"),
        "TORCH_CUDA_ARCH_LIST": "8.0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_AND_IMPORT], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "compiled and imported" in result.stdout, result.stdout + result.stderr
