"""Output contract of SeqFormer.forward on tiny configurations."""

from __future__ import annotations

import pytest
import torch

from seqformer.model import build_model
from tests.model.helpers import tiny_config


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(tiny_config(dec_layers=2)).eval()


@pytest.mark.parametrize("num_frames", [1, 2, 5])
def test_output_shapes(tiny_model, num_frames):
    with torch.no_grad():
        out = tiny_model([torch.randn(num_frames, 3, 64, 96)])
    assert out["pred_logits"].shape == (1, 12, 42)
    assert out["pred_boxes"].shape == (1, num_frames, 12, 4)
    assert out["pred_masks"].shape == (1, 12, num_frames, 16, 24)
    assert len(out["aux_outputs"]) == 1
    aux = out["aux_outputs"][0]
    assert aux["pred_logits"].shape == (1, 12, 42) and aux["pred_boxes"].shape == (1, num_frames, 12, 4)
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()


def test_padded_batch_of_differently_sized_clips(tiny_model):
    clips = [torch.randn(2, 3, 64, 64), torch.randn(2, 3, 50, 90)]
    images, mask, sizes = tiny_model.prepare_inputs(clips)
    assert images.shape == (4, 3, 64, 96) and mask.shape == (4, 64, 96)
    assert sizes.tolist() == [[64, 64], [50, 90]]
    assert not mask[0, :, :64].any() and mask[0, :, 64:].all()
    assert not mask[3, :50, :90].any() and mask[3, 50:].all() and mask[3, :, 90:].all()
    torch.testing.assert_close(images[2, :, :50, :90], clips[1][0])
    assert images[2, :, 50:].abs().sum() == 0
    with torch.no_grad():
        out = tiny_model(clips)
    assert out["pred_masks"].shape == (2, 12, 2, 16, 24)
    assert torch.isfinite(out["pred_masks"]).all() and torch.isfinite(out["pred_logits"]).all()


def test_tensor_input_equals_list_input(tiny_model):
    clips = torch.randn(2, 2, 3, 64, 96)
    with torch.no_grad():
        a = tiny_model(clips)
        b = tiny_model(list(clips))
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"])


def test_bad_inputs_raise(tiny_model):
    with pytest.raises(ValueError, match="same number of frames"):
        tiny_model([torch.randn(2, 3, 64, 96), torch.randn(3, 3, 64, 96)])
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        tiny_model([torch.randn(2, 64, 64)])


def test_train_mode_returns_mask_inputs_not_all_query_masks():
    model = build_model(tiny_config()).train()
    out = model([torch.randn(2, 3, 64, 96)])
    assert "pred_masks" not in out
    inputs = out["mask_inputs"]
    assert inputs["mask_feats"].shape == (1, 2, 1, 8, 12)  # hidden 32 -> 32 // 32 = 1 mask channel
    assert inputs["params"].shape == (1, 12, (1 + 2) * 8 + 64 + 8 + 17)
    assert inputs["ref_points"].shape == (1, 2, 12, 2)


def test_bfloat16_autocast_inference_stays_close_to_float32(tiny_model):
    clips = [torch.randn(2, 3, 64, 96)]
    with torch.no_grad():
        ref = tiny_model(clips)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny_model(clips)
    assert torch.isfinite(low["pred_masks"].float()).all()
    torch.testing.assert_close(low["pred_logits"].float(), ref["pred_logits"], atol=0.15, rtol=0.05)
    torch.testing.assert_close(low["pred_boxes"].float(), ref["pred_boxes"], atol=0.03, rtol=0.05)
    masks_ref = ref["pred_masks"]
    err = (low["pred_masks"].float() - masks_ref).abs().mean() / masks_ref.abs().mean()
    assert err < 0.1


def test_size_divisibility_one_pads_nothing_and_32_is_the_default(tiny_model):
    clip = torch.randn(2, 3, 50, 70)
    images, mask, _ = tiny_model.prepare_inputs([clip], 1)
    assert images.shape == (2, 3, 50, 70) and not mask.any()
    assert tiny_model.prepare_inputs([clip])[0].shape == (2, 3, 64, 96)
    with torch.no_grad():
        unpadded = tiny_model([clip], size_divisibility=1)
        padded = tiny_model([clip])
        configured = build_model(tiny_config(dec_layers=2, size_divisibility=1)).eval()
        configured.load_state_dict(tiny_model.state_dict())
        from_config = configured([clip])
    # stride-8 features of 50x70 are 7x9 (ceil of the conv arithmetic), masks are twice that
    assert unpadded["pred_masks"].shape == (1, 12, 2, 14, 18)
    assert padded["pred_masks"].shape == (1, 12, 2, 16, 24)
    assert torch.equal(from_config["pred_logits"], unpadded["pred_logits"])
    assert not torch.allclose(unpadded["pred_logits"], padded["pred_logits"])
    with pytest.raises(ValueError, match="size_divisibility"):
        tiny_model([clip], size_divisibility=0)


def test_pred_queries_are_the_last_class_head_input(tiny_model):
    captured = []
    hook = tiny_model.detr.class_embed[-1].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            out = tiny_model([torch.randn(2, 3, 64, 96)])
    finally:
        hook.remove()
    assert out["pred_queries"].shape == (1, 12, 32)
    assert torch.equal(out["pred_queries"], captured[-1])
    torch.testing.assert_close(tiny_model.detr.class_embed[-1](out["pred_queries"]), out["pred_logits"])


def test_three_feature_levels_without_the_stride64_level():
    torch.manual_seed(0)
    model = build_model(tiny_config(num_feature_levels=3)).eval()
    assert len(model.detr.input_proj) == 3
    with torch.no_grad():
        out = model([torch.randn(2, 3, 64, 96)])
    assert out["pred_logits"].shape == (1, 12, 42)
    assert out["pred_boxes"].shape == (1, 2, 12, 4)
    assert out["pred_masks"].shape == (1, 12, 2, 16, 24)
    assert torch.isfinite(out["pred_masks"]).all()
