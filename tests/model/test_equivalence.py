"""Equivalence of our building blocks with the specification's formulas (reference §3-§8)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seqformer.kernels import ms_deform_attn
from seqformer.model import build_model
from seqformer.model.backbone import FrozenBatchNorm2d
from seqformer.model.mask_head import aligned_bilinear, compute_locations, dynamic_mask_logits
from seqformer.model.ms_deform_attn import MSDeformAttn
from seqformer.model.position_encoding import PositionEmbeddingSine
from tests.model.helpers import tiny_config


def test_sine_position_encoding_matches_the_formula():
    mask = torch.zeros(1, 3, 5, dtype=torch.bool)
    mask[0, 2:, :] = True  # two valid rows
    mask[0, :, 4:] = True  # four valid columns
    pos = PositionEmbeddingSine(8)(mask)
    assert pos.shape == (1, 16, 3, 5)
    for i in range(2):  # unpadded positions (padded cells divide by ~1e-6: float32 noise)
        for j in range(4):
            valid_rows = int((~mask[0, :, j]).sum())
            valid_cols = int((~mask[0, i, :]).sum())
            y = (float((~mask[0, : i + 1, j]).sum()) - 0.5) / (valid_rows + 1e-6) * 2 * math.pi
            x = (float((~mask[0, i, : j + 1]).sum()) - 0.5) / (valid_cols + 1e-6) * 2 * math.pi
            for c in range(8):
                dim_t = 10000 ** (2 * (c // 2) / 8)
                fn = math.sin if c % 2 == 0 else math.cos
                assert math.isclose(pos[0, c, i, j].item(), fn(y / dim_t), abs_tol=1e-5)
                assert math.isclose(pos[0, 8 + c, i, j].item(), fn(x / dim_t), abs_tol=1e-5)


def test_aligned_bilinear_reads_position_max0_i_minus_1_over_2():
    x = torch.randn(2, 1, 4, 5)
    up = aligned_bilinear(x, 2)
    assert up.shape == (2, 1, 8, 10)

    def sample(img, pos_y, pos_x):  # bilinear read at fractional input positions
        y0, x0 = int(math.floor(pos_y)), int(math.floor(pos_x))
        y1, x1 = min(y0 + 1, img.shape[0] - 1), min(x0 + 1, img.shape[1] - 1)
        wy, wx = pos_y - y0, pos_x - x0
        top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
        bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
        return top * (1 - wy) + bottom * wy

    for i in range(8):
        for j in range(10):
            expected = sample(x[1, 0], max(0.0, (i - 1) / 2), max(0.0, (j - 1) / 2))
            assert torch.allclose(up[1, 0, i, j], expected, atol=1e-6)


def test_dynamic_convs_equal_grouped_convolutions():
    """The bmm formulation equals the official grouped conv with one group per query and the 169-layout."""
    torch.manual_seed(1)
    n, c, h, w = 5, 8, 6, 7
    feats = torch.relu(torch.randn(c, h, w))
    params = torch.randn(n, 169) * 0.3
    refs = torch.rand(n, 2) * torch.tensor([56.0, 48.0])
    ours = dynamic_mask_logits(feats, params, refs)
    # official formulation
    locations = compute_locations(h, w, 8, feats.device)
    rel = (refs.reshape(n, 1, 1, 2) - locations.reshape(1, h, w, 2)).permute(0, 3, 1, 2)  # [n, 2, h, w]
    x = torch.cat([rel, feats[None].expand(n, -1, -1, -1)], 1).reshape(1, n * 10, h, w)
    w1, w2, w3, b1, b2, b3 = torch.split_with_sizes(params, [80, 64, 8, 8, 8, 1], dim=1)
    x = F.relu(F.conv2d(x, w1.reshape(n * 8, 10, 1, 1), b1.reshape(-1), groups=n))
    x = F.relu(F.conv2d(x, w2.reshape(n * 8, 8, 1, 1), b2.reshape(-1), groups=n))
    x = F.conv2d(x, w3.reshape(n, 8, 1, 1), b3.reshape(-1), groups=n)
    expected = aligned_bilinear(x.reshape(n, 1, h, w), 2)[:, 0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-4)


def test_relative_coordinates_are_raw_pixels_to_cell_centres():
    loc = compute_locations(2, 3, 8, torch.device("cpu"))
    assert loc.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_frozen_batch_norm_formula():
    bn = FrozenBatchNorm2d(3)
    bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    bn.running_mean.copy_(torch.tensor([0.5, 0.0, -1.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(2, 3, 4, 4)
    ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=1e-5)
    torch.testing.assert_close(bn(x), ref)
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    state["num_batches_tracked"] = torch.tensor(3)
    bn.load_state_dict(state)  # BatchNorm checkpoints with counters load


def test_attention_folds_frames_like_per_frame_official_calls():
    """The first decoder layer's shared box query (repeat=T) equals one op call per frame (official loop)."""
    torch.manual_seed(2)
    attn = MSDeformAttn(32, n_levels=2, n_heads=4, n_points=2, backend="reference")
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)
    shapes = torch.tensor([[4, 6], [2, 3]])
    start = torch.tensor([0, 24])
    batch, frames, queries = 2, 3, 5
    value = torch.randn(batch * frames, 30, 4, 8)
    query = torch.randn(batch, queries, 32)
    refs = torch.rand(batch, frames, queries, 2, 2)
    folded = attn.sample(query, refs.flatten(0, 1), value, shapes, start, repeat=frames).view(
        batch, frames, queries, 32
    )
    n_off = attn.sampling_offsets(query).view(batch, queries, 4, 2, 2, 2)
    weights = F.softmax(attn.attention_weights(query).view(batch, queries, 4, 4), -1).view(batch, queries, 4, 2, 2)
    normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1)
    for t in range(frames):
        loc = refs[:, t][:, :, None, :, None, :] + n_off / normalizer[None, None, None, :, None, :]
        v = value.view(batch, frames, 30, 4, 8)[:, t]
        expected = ms_deform_attn(v, shapes, start, loc, weights, backend="reference")
        torch.testing.assert_close(folded[:, t], expected)


def test_batch_elements_are_independent_of_each_other():
    """Folding clips and frames into one batch axis changes nothing: a clip alone gives the same outputs."""
    torch.manual_seed(3)
    model = build_model(tiny_config()).eval()
    a, b = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        both = model([a, b])
        alone = model([b])
    torch.testing.assert_close(both["pred_logits"][1], alone["pred_logits"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both["pred_boxes"][1], alone["pred_boxes"][0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(both["pred_masks"][1], alone["pred_masks"][0], rtol=1e-4, atol=1e-3)
