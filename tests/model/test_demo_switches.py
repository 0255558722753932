"""The non-official switches for small models trained from scratch: stride-4 mask features, the mask-shape class
head and the edge input channel. All are off by default (the official state dict is covered by test_state_dict)."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import ModelConfig, build_criterion, build_model
from seqformer.model.mask_head import dynamic_mask_logits
from tests.model.helpers import synthetic_target, tiny_config


def test_defaults_add_nothing():
    cfg = ModelConfig()
    assert cfg.mask_feat_stride == 8 and cfg.mask_class_head is False and cfg.input_edges is False
    keys = build_model(tiny_config()).state_dict().keys()
    assert not any(k.startswith(("mask_head.fine", "mask_shape_head")) for k in keys)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"mask_feat_stride": 2}, "mask_feat_stride must be 8"),
        ({"mask_feat_stride": 4, "mask_out_stride": 8}, "mask_out_stride must divide model.mask_feat_stride"),
        ({"mask_feat_stride": 4, "backbone": "swin_l"}, "needs a ResNet backbone"),
    ],
)
def test_bad_mask_feature_stride_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_dynamic_head_places_stride4_locations_at_cell_centres():
    # 8 feature channels (all zero); the three dynamic layers pass the relative x coordinate through channel 0
    params = torch.zeros(1, 80 + 64 + 8 + 8 + 8 + 1, dtype=torch.float64)
    params[0, 0] = 1.0  # layer 1 [8 out, 10 in]: out 0 <- in 0 (rel x)
    params[0, 80] = 1.0  # layer 2 [8, 8]: out 0 <- in 0
    params[0, 80 + 64] = 1.0  # layer 3 [1, 8]: out 0 <- in 0
    feats = torch.zeros(8, 3, 5, dtype=torch.float64)
    ref = torch.tensor([[13.0, 5.0]], dtype=torch.float64)
    out = dynamic_mask_logits(feats, params, ref, feat_stride=4, out_stride=4)
    expected = (13.0 - (4 * torch.arange(5, dtype=torch.float64) + 2)).clamp(min=0).expand(3, 5)
    torch.testing.assert_close(out[0], expected)


def test_stride4_mask_features_keep_the_output_contract_and_train_the_new_branch():
    torch.manual_seed(0)
    cfg = tiny_config(mask_feat_stride=4, num_classes=5)
    model = build_model(cfg).train()
    keys = model.state_dict().keys()
    assert {"mask_head.fine_proj.weight", "mask_head.fine.weight"} <= set(keys)
    assert model.mask_head.fine_proj.in_channels == 256  # ResNet-50 layer1
    out = model([torch.randn(2, 3, 64, 96)])
    assert out["mask_inputs"]["mask_feats"].shape[-2:] == (16, 24)  # stride 4 of the padded 64x96 clip
    target = synthetic_target(2, 2, 64, 96, seed=1)
    target["labels"] = torch.tensor([1, 3])
    criterion = build_criterion(cfg)
    criterion.total_loss(criterion(out, [target])).backward()
    assert model.mask_head.fine_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        masks = model([torch.randn(2, 3, 64, 96)])["pred_masks"]
    assert masks.shape == (1, cfg.num_queries, 2, 16, 24)


def test_mask_shape_head_starts_as_a_no_op_and_reads_detached_silhouettes():
    clip = torch.randn(2, 3, 64, 96)
    torch.manual_seed(0)
    plain = build_model(tiny_config(num_classes=5)).eval()
    torch.manual_seed(0)
    model = build_model(tiny_config(num_classes=5, mask_class_head=True)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model([clip])["pred_logits"], plain([clip])["pred_logits"], rtol=0, atol=0)
    torch.nn.init.normal_(model.mask_shape_head.net[-1].weight)
    captured = {}
    model.mask_shape_head.net[0].register_forward_hook(lambda m, i, o: captured.__setitem__("crops", i[0]))
    model.train()
    out = model([clip])
    assert not torch.equal(out["pred_logits"].detach(), plain.train()([clip])["pred_logits"].detach())
    out["pred_logits"][..., 1].sum().backward()  # one class: the head's logits sum to zero over the classes
    assert model.mask_shape_head.net[0].weight.grad.abs().sum() > 0
    # the class loss does not reach the masks or the boxes through the silhouettes
    assert model.mask_head.lay2.weight.grad is None
    assert all(p.grad is None for p in model.controller.parameters())
    crops = captured["crops"]
    assert crops.shape == (2 * 12, 1, 16, 16) and 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0


def test_mask_shape_head_crops_the_mask_inside_the_box():
    from seqformer.model.shape_head import MaskShapeHead

    head = MaskShapeHead(num_classes=3)
    captured = {}
    head.net[0].register_forward_hook(lambda m, i, o: captured.__setitem__("crops", i[0]))
    logits = torch.full((1, 1, 1, 16, 24), -30.0)  # [B, Q, T, h4, w4] of a 64x96 clip
    logits[0, 0, 0, 4:12, 6:14] = 30.0  # a square in pixels x 24..56, y 16..48
    boxes = torch.tensor([[[[40 / 96, 32 / 64, 32 / 96, 32 / 64]]]])  # the square's box, cxcywh
    out = head(logits, boxes, torch.tensor([[64, 96]]), mask_stride=4)
    assert out.shape == (1, 1, 3) and torch.count_nonzero(out) == 0  # zero-initialised last layer
    crops = captured["crops"]
    assert crops.shape == (1, 1, 16, 16)
    assert float(crops[0, 0, 1:-1, 1:-1].min()) > 0.99  # the box holds the square only


def test_mask_shape_head_only_moves_classes_against_each_other():
    from seqformer.model.shape_head import MaskShapeHead

    torch.manual_seed(0)
    head = MaskShapeHead(num_classes=5)
    torch.nn.init.normal_(head.net[-1].weight)
    torch.nn.init.normal_(head.net[-1].bias)
    logits = torch.randn(2, 3, 4, 16, 24)  # [B, Q, T, h4, w4]
    boxes = torch.rand(2, 4, 3, 4) * 0.5 + 0.25
    out = head(logits, boxes, torch.tensor([[64, 96], [60, 90]]), mask_stride=4)
    assert out.shape == (2, 3, 5) and out.abs().max() > 1e-3
    torch.testing.assert_close(out.sum(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- input_edges


def _edges_by_hand(image: torch.Tensor) -> torch.Tensor:
    """float64 Sobel magnitude of a ``[3, H, W]`` image written out pixel by pixel (replicated borders)."""
    c, h, w = image.shape
    sx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    out = torch.zeros(h, w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            total = 0.0
            for ch in range(c):
                gx = gy = 0.0
                for dy in range(3):
                    for dx in range(3):
                        v = float(image[ch, min(max(y + dy - 1, 0), h - 1), min(max(x + dx - 1, 0), w - 1)])
                        gx += sx[dy][dx] * v
                        gy += sx[dx][dy] * v
                total += gx * gx + gy * gy
            out[y, x] = total**0.5
    return out / out.max() * 4 - 1


def test_edge_channel_matches_a_hand_written_sobel_magnitude():
    from seqformer.model.backbone import edge_channel

    image = torch.randn(2, 3, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    edges = edge_channel(image)
    assert edges.shape == (2, 1, 7, 9)
    for n in range(2):
        assert torch.allclose(edges[n, 0], _edges_by_hand(image[n]), atol=1e-12)


def test_edge_channel_is_the_same_for_any_two_colours():
    from seqformer.model.backbone import edge_channel

    def scene(inside: tuple[float, float, float], outside: tuple[float, float, float]) -> torch.Tensor:
        image = torch.tensor(outside, dtype=torch.float64)[:, None, None].repeat(1, 16, 16)
        image[:, 4:11, 3:9] = torch.tensor(inside, dtype=torch.float64)[:, None, None]
        return image

    a = edge_channel(scene((1.5, -0.2, 0.3), (-1.0, 0.8, 0.1))[None])
    b = edge_channel(scene((-0.4, -0.4, 2.0), (0.9, 1.1, -1.3))[None])
    assert torch.allclose(a, b, atol=1e-12)
    assert float(a.max()) == 3.0 and float(a.min()) == -1.0  # boundary at the top, flat regions at the bottom


def test_padded_frames_get_the_edge_channel_of_their_own_pixels():
    from seqformer.model.backbone import edge_channel, padded_edge_channel

    gen = torch.Generator().manual_seed(1)
    small = torch.randn(3, 3, 10, 12, dtype=torch.float64, generator=gen)
    large = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=gen)
    batch = torch.zeros(5, 3, 16, 16, dtype=torch.float64)  # the model pads with zeros, bottom and right
    batch[:3, :, :10, :12] = small
    batch[3:] = large
    padding = torch.ones(5, 16, 16, dtype=torch.bool)
    padding[:3, :10, :12] = False
    padding[3:] = False
    edges = padded_edge_channel(batch, padding)
    assert torch.equal(edges[:3, :, :10, :12], edge_channel(small))  # as if the frames were alone
    assert bool((edges[:3, :, 10:, :] == -1).all()) and bool((edges[:3, :, :, 12:] == -1).all())
    assert torch.equal(edges[3:], edge_channel(large))
    # the naive channel of the padded batch differs: an edge along the padding border, another maximum
    assert not torch.allclose(edge_channel(batch)[:3, :, :10, :12], edge_channel(small))
    assert torch.equal(padded_edge_channel(large, torch.zeros(2, 16, 16, dtype=torch.bool)), edge_channel(large))


def test_edge_channel_stays_float32_under_bfloat16_autocast():
    from seqformer.model.backbone import padded_edge_channel

    gen = torch.Generator().manual_seed(2)
    batch = torch.randn(2, 3, 16, 16, generator=gen)
    padding = torch.zeros(2, 16, 16, dtype=torch.bool)
    padding[0, 10:] = True
    expected = padded_edge_channel(batch, padding)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        edges = padded_edge_channel(batch, padding)  # the Sobel convolution would otherwise come out bfloat16
    assert edges.dtype == torch.float32 and torch.equal(edges, expected)


def test_a_clip_gets_the_same_edge_input_alone_and_padded_in_a_batch():
    torch.manual_seed(0)
    cfg = tiny_config(backbone="tiny_resnet", input_edges=True, frozen_batch_norm=False, freeze_stem=False)
    model = build_model(cfg).eval()
    body = model.detr.backbone[0]
    seen = []
    body.body.conv1.register_forward_hook(lambda module, args, out: seen.append(args[0][:, 3].clone()))
    small = torch.randn(cfg.num_frames, 3, 40, 56)
    with torch.no_grad():
        model([small])
        model([small, torch.randn(cfg.num_frames, 3, 96, 96)])
    alone, batched = seen  # padded to 64x64 alone, to 96x96 next to the larger clip
    assert alone.shape[-2:] == (64, 64) and batched.shape[-2:] == (96, 96)
    torch.testing.assert_close(batched[: cfg.num_frames, :64, :64], alone)
    assert bool((batched[: cfg.num_frames, 40:] == -1).all()) and bool((batched[: cfg.num_frames, :, 56:] == -1).all())


def test_input_edges_gives_the_stem_four_channels_and_trains_it():
    torch.manual_seed(0)
    cfg = tiny_config(backbone="tiny_resnet", input_edges=True, frozen_batch_norm=False, freeze_stem=False)
    model = build_model(cfg).train()
    plain = build_model(tiny_config(backbone="tiny_resnet", frozen_batch_norm=False, freeze_stem=False))
    stem = "detr.backbone.0.body.conv1.weight"
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes[stem][1] == 4
    assert {k: v for k, v in shapes.items() if k != stem} == {
        k: v.shape for k, v in plain.state_dict().items() if k != stem
    }
    criterion = build_criterion(cfg)
    clips = [torch.randn(2, 3, 64, 96)]
    losses = criterion(model(clips), [synthetic_target(2, 2, 64, 96)])
    criterion.total_loss(losses).backward()
    grad = dict(model.named_parameters())[stem].grad
    assert grad is not None and float(grad[:, 3].abs().sum()) > 0  # the edge channel's weights learn


def test_edges_without_rgb_give_the_stem_one_channel_and_ignore_the_colours():
    torch.manual_seed(0)
    cfg = tiny_config(backbone="tiny_resnet", input_edges=True, input_rgb=False, frozen_batch_norm=False)
    model = build_model(cfg).eval()
    assert model.state_dict()["detr.backbone.0.body.conv1.weight"].shape[1] == 1
    torch.manual_seed(0)
    with_rgb = build_model(tiny_config(backbone="tiny_resnet", input_edges=True, frozen_batch_norm=False)).eval()
    clip = torch.randn(cfg.num_frames, 3, 48, 64)
    shifted = clip + torch.tensor([0.7, -0.4, 1.1])[:, None, None]  # new colours, the same gradients
    with torch.no_grad():
        out, out_shifted = model([clip]), model([shifted])
        rgb, rgb_shifted = with_rgb([clip]), with_rgb([shifted])
    torch.testing.assert_close(out_shifted["pred_logits"], out["pred_logits"])
    torch.testing.assert_close(out_shifted["pred_boxes"], out["pred_boxes"])
    assert not torch.allclose(rgb_shifted["pred_logits"], rgb["pred_logits"])  # the RGB stem sees the colours


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"input_edges": True, "backbone": "swin_l"}, "model.input_edges"),
        ({"input_edges": True, "pretrained_backbone": "weights.pth"}, "model.input_edges"),
        ({"input_rgb": False}, "model.input_rgb=false"),
    ],
)
def test_input_switches_refuse_unusable_combinations(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


# ---------------------------------------------------------------------------------------------------- query groups
def _grouped_pair(groups: int = 3, **overrides):
    """A model with ``groups`` training query groups and a one-group model with the same weights."""
    torch.manual_seed(0)
    cfg = tiny_config(train_query_groups=groups, dec_layers=2, dropout=0.0, **overrides)
    grouped = build_model(cfg)
    single = build_model(tiny_config(dec_layers=2, dropout=0.0, **overrides))
    state = {k: v for k, v in grouped.state_dict().items() if not k.startswith("extra_query_embed")}
    single.load_state_dict(state)
    return cfg, grouped, single


def test_query_groups_add_only_the_extra_queries_and_refuse_bad_values():
    cfg, grouped, single = _grouped_pair(groups=3)
    extra = set(grouped.state_dict()) - set(single.state_dict())
    assert extra == {"extra_query_embed.weight"}
    assert grouped.extra_query_embed.weight.shape == (2 * cfg.num_queries, 2 * cfg.hidden_dim)
    assert "extra_query_embed.weight" not in build_model(tiny_config()).state_dict()
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="train_query_groups must be an integer >= 1"):
            tiny_config(train_query_groups=bad)


def test_inference_uses_the_first_group_only():
    _, grouped, single = _grouped_pair()
    clip = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        got, expected = grouped.eval()(clip), single.eval()(clip)
    assert "query_groups" not in got
    for key in ("pred_logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_training_groups_do_not_see_each_other():
    """In training, every group computes what a one-group model with that group's queries computes: the
    self-attention mask keeps groups apart (without it, group 0 would change with the other groups' queries)."""
    cfg, grouped, single = _grouped_pair()
    clip = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
    grouped.train()
    single.train()
    from seqformer.model.seqformer import query_group

    with torch.no_grad():
        out = grouped(clip)
        assert out["query_groups"] == 3 and out["pred_logits"].shape[1] == 3 * cfg.num_queries
        embeds = torch.cat([grouped.detr.query_embed.weight, grouped.extra_query_embed.weight]).split(cfg.num_queries)
        for g, embed in enumerate(embeds):
            single.detr.query_embed.weight.copy_(embed)
            expected = single(clip)
            part = query_group(out, g, cfg.num_queries)
            torch.testing.assert_close(part["pred_logits"], expected["pred_logits"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(part["pred_boxes"], expected["pred_boxes"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(part["aux_outputs"][0]["pred_boxes"], expected["aux_outputs"][0]["pred_boxes"],
                                       rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(part["mask_inputs"]["params"], expected["mask_inputs"]["params"],
                                       rtol=1e-5, atol=1e-5)


def test_every_group_is_matched_and_weighted_like_the_first():
    cfg, grouped, single = _grouped_pair(groups=2)
    criterion, plain = build_criterion(cfg), build_criterion(tiny_config(dec_layers=2))
    base = set(plain.weight_dict)
    assert set(criterion.weight_dict) == base | {f"{k}_g1" for k in base}
    assert all(criterion.weight_dict[f"{k}_g1"] == plain.weight_dict[k] for k in base)
    clip = [torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))]
    target = synthetic_target(3, 2, 64, 64, seed=2)
    from seqformer.model.seqformer import query_group

    grouped.train()
    out = grouped(clip)
    losses = criterion(out, [target])
    for g, suffix in ((0, ""), (1, "_g1")):
        alone = plain(query_group(out, g, cfg.num_queries), [target])
        for key in ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_0"):
            torch.testing.assert_close(losses[key + suffix], alone[key])
    total = criterion.total_loss(losses)
    expected = sum(plain.total_loss(plain(query_group(out, g, cfg.num_queries), [target])) for g in (0, 1))
    torch.testing.assert_close(total, expected)
    total.backward()
    assert grouped.extra_query_embed.weight.grad.abs().sum() > 0
