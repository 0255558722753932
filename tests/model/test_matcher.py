from __future__ import annotations

import itertools
import math

import torch

from seqformer.model import VideoHungarianMatcher


def _outputs(batch, queries, frames, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, queries, classes, generator=g)
    centre = torch.rand(batch, frames, queries, 2, generator=g) * 0.5 + 0.25
    size = torch.rand(batch, frames, queries, 2, generator=g) * 0.3 + 0.05
    return {"pred_logits": logits, "pred_boxes": torch.cat([centre, size], -1)}


def _targets(n, frames, seed):
    g = torch.Generator().manual_seed(seed)
    boxes = torch.cat(
        [torch.rand(n, frames, 2, generator=g) * 0.5 + 0.25, torch.rand(n, frames, 2, generator=g) * 0.3 + 0.05], -1
    )
    return {"labels": torch.randint(0, 5, (n,), generator=g), "boxes": boxes}


def _giou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def test_cost_matrix_matches_the_formula():
    out, tgt = _outputs(1, 3, 2), _targets(2, 2, 1)
    cost = VideoHungarianMatcher(2, 5, 2).cost_matrix(out, [tgt])[0]
    for q in range(3):
        for j in range(2):
            p = torch.sigmoid(out["pred_logits"][0, q, tgt["labels"][j]]).item()
            cls = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8) - 0.75 * p**2 * -math.log(1 - p + 1e-8)
            pred = out["pred_boxes"][0, :, q].double()
            l2 = torch.linalg.vector_norm(pred.flatten() - tgt["boxes"][j].double().flatten()).item()
            giou = sum(_giou(pred[t].tolist(), tgt["boxes"][j, t].tolist()) for t in range(2)) / 2
            assert math.isclose(cost[q, j].item(), 5 * l2 + 2 * cls - 2 * giou, rel_tol=1e-5, abs_tol=1e-5)


def test_assignment_is_optimal_against_brute_force():
    matcher = VideoHungarianMatcher(2, 5, 2)
    for seed in range(3):
        out, tgt = _outputs(1, 5, 3, seed=seed), _targets(3, 3, seed + 10)
        ((q_idx, t_idx),) = matcher(out, [tgt])
        cost = matcher.cost_matrix(out, [tgt])[0]
        best = min(sum(cost[q, j].item() for j, q in enumerate(perm)) for perm in itertools.permutations(range(5), 3))
        assert math.isclose(sum(cost[q, j].item() for q, j in zip(q_idx, t_idx)), best, rel_tol=1e-6)
        assert q_idx.tolist() == sorted(q_idx.tolist()) and sorted(t_idx.tolist()) == [0, 1, 2]


def test_batched_equals_single_and_empty_targets():
    matcher = VideoHungarianMatcher(2, 5, 2)
    out = _outputs(3, 6, 2)
    targets = [
        _targets(2, 2, 1),
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 2, 4)},
        _targets(3, 2, 2),
    ]
    batched = matcher(out, targets)
    for b in range(3):
        single = matcher({k: v[b : b + 1] for k, v in out.items()}, [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
    assert batched[1][0].numel() == 0 and batched[1][0].dtype == torch.int64
    all_empty = matcher(out, [targets[1]] * 3)
    assert all(q.numel() == 0 and t.numel() == 0 for q, t in all_empty)


def test_instances_absent_in_some_frames_are_matched_to_the_degenerate_box():
    out = _outputs(1, 4, 3)
    tgt = _targets(2, 3, 5)
    tgt["boxes"][1, 1] = 1e-6  # absent in frame 1: the dataset's clamped zero box
    tgt["valid"] = torch.tensor([[True, True, True], [True, False, True]])
    ((q_idx, t_idx),) = VideoHungarianMatcher(2, 5, 2)(out, [tgt])
    assert len(q_idx) == 2 and sorted(t_idx.tolist()) == [0, 1]
    assert torch.isfinite(VideoHungarianMatcher(2, 5, 2).cost_matrix(out, [tgt])).all()
