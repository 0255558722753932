"""Pieces of the training loop that need no Ray: the autocast chosen for ``train.amp``."""

from __future__ import annotations

import pytest
import torch

from seqformer.platform.train_loop import autocast_context


def test_bf16_autocast_on_cpu_runs_linear_layers_in_bfloat16():
    layer = torch.nn.Linear(8, 4)
    with autocast_context("bf16", torch.device("cpu")):
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    with autocast_context("none", torch.device("cpu")):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


def test_fp16_autocast_on_cpu_is_refused_with_the_key():
    with pytest.raises(ValueError, match=r"train\.amp: fp16 autocast needs a GPU"):
        autocast_context("fp16", torch.device("cpu"))
