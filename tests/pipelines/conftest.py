"""Fixtures of the pipelines tests: tiny synthetic datasets and a module-scoped local Ray."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from seqformer.pipelines.synthetic import generate_ytvis


@pytest.fixture(scope="session")
def synthetic_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A pristine 5-video 64x64 YouTube-VIS-layout dataset (4-8 frames); copy it before modifying."""
    root = tmp_path_factory.mktemp("synthetic_ytvis")
    annotations = generate_ytvis(root, num_videos=5, height=64, width=64, min_frames=4, max_frames=8, seed=3)
    return root, annotations


@pytest.fixture
def ytvis_copy(synthetic_source: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the synthetic dataset that a test may corrupt."""
    root = tmp_path / "ytvis"
    shutil.copytree(synthetic_source[0], root)
    return root, root / synthetic_source[1].name


@pytest.fixture(scope="module")
def local_ray():
    """A local two-CPU Ray on loopback for the tests of one module."""
    for key, value in {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }.items():
        os.environ[key] = value
    os.environ.pop("RAY_ADDRESS", None)
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another module's Ray is still up: reuse it
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
