"""Pieces of the training loop that need no Ray: the autocast chosen for ``train.amp``."""

from __future__ import annotations

from pathlib import Path

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


class _Shard:
    """Stands in for ``ray.train.get_dataset_shard``: rows of clip records."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records

    def iter_rows(self):  # noqa: ANN201
        return iter(self.records)


@pytest.mark.parametrize("shared", [True, False])
def test_train_batches_share_each_steps_size_across_workers_when_asked(shared: bool):
    """``data.shared_batch_scale``: two workers (seeds base + rank, different shards) resize step k's clips to one
    size; off (official), sizes are drawn clip by clip."""
    from seqformer.platform.config import load_experiment
    from seqformer.platform.data import TrainBatches
    from tests.pipelines.test_transforms import _record

    demo = Path(__file__).resolve().parents[2] / "experiments" / "demo" / "tiny_cpu.yaml"
    exp = load_experiment(demo, [
        f"data.shared_batch_scale={str(shared).lower()}", "data.train_scales=[40,48,56,64]", "data.max_train_size=120",
        "train.batch_size=2", "data.shuffle_buffer=4",
    ])
    sides = []
    for rank in range(2):
        shard = _Shard([{**_record(), "video_id": 10 * rank + v} for v in range(4)])
        batches = TrainBatches(exp, shard, seed=exp.train.seed + rank).epoch(0)
        sides.append([[min(clip.shape[-2:]) for clip in batch["clips"]] for batch in batches])
    assert len(sides[0]) == len(sides[1]) == 12
    same_step = [len(set(a + b)) == 1 for a, b in zip(*sides)]
    assert all(same_step) if shared else not all(same_step)
