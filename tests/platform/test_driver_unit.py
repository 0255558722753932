"""Driver helpers that need no Ray cluster: which checkpoint is kept and which metric its registry tag carries."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from seqformer.platform.driver import _best_checkpoint


def _ckpt(path: str) -> SimpleNamespace:
    return SimpleNamespace(path=path)


def test_best_checkpoint_is_the_last_ranked_one_with_its_own_metrics():
    result = SimpleNamespace(
        best_checkpoints=[(_ckpt("/s/checkpoint_1"), {"val/AP": 0.2, "step": 10}),
                          (_ckpt("/s/checkpoint_0"), {"val/AP": 0.5, "step": 5})],
        checkpoint=_ckpt("/s/checkpoint_1"),
        metrics={"val/AP": 0.2, "step": 10},  # the last report: worse than the kept checkpoint
    )
    path, metrics = _best_checkpoint(result)
    assert path == Path("/s/checkpoint_0")
    assert metrics["val/AP"] == 0.5 and metrics["step"] == 5


def test_without_a_ranking_the_latest_checkpoint_and_last_metrics_are_used():
    result = SimpleNamespace(best_checkpoints=[], checkpoint=_ckpt("/s/checkpoint_3"), metrics={"val/AP": 0.1})
    assert _best_checkpoint(result) == (Path("/s/checkpoint_3"), {"val/AP": 0.1})
    assert _best_checkpoint(SimpleNamespace(best_checkpoints=None, checkpoint=None, metrics={})) == (None, {})
