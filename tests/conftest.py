"""Shared fixtures: restore dtype and seeds, keep any local Ray on loopback."""

from __future__ import annotations

import os
import random

import pytest

# Every local Ray started by the tests listens on 127.0.0.1 only, with token auth explicitly off.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(autouse=True)
def _restore_torch_state():
    import numpy as np
    import torch

    dtype = torch.get_default_dtype()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_default_dtype(dtype)
