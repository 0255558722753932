from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from seqformer.model import postprocess_video


def _outputs():
    logits = torch.full((1, 3, 4), -8.0)
    logits[0, 2, 1] = 3.0  # best pair: query 2, class 1
    logits[0, 0, 3] = 2.0  # second: query 0 (its mask is empty -> skipped)
    logits[0, 2, 0] = 1.0  # third: query 2 again, class 0
    logits[0, 1, 2] = 0.5  # fourth: query 1
    masks = torch.full((1, 3, 2, 4, 4), -5.0)
    masks[0, 2, 0, :2, :2] = 5.0
    masks[0, 2, 1, 2:, 2:] = 5.0
    masks[0, 1, :, 1:3, 1:3] = 5.0
    return {"pred_logits": logits, "pred_masks": masks}


def test_topk_grouping_order_skipping_and_rle():
    out = _outputs()
    results = postprocess_video(out, 0, input_size=(16, 16), orig_size=(10, 12), top_k=4, video_id=7)
    assert [(r["category_id"], round(r["score"], 4)) for r in results] == [
        (1, round(1 / (1 + np.exp(-3.0)), 4)),
        (0, round(1 / (1 + np.exp(-1.0)), 4)),
        (2, round(1 / (1 + np.exp(-0.5)), 4)),
    ]
    assert all(r["video_id"] == 7 for r in results)
    expected = (
        F.interpolate(out["pred_masks"][0, 2][:, None], (10, 12), mode="bilinear", align_corners=False).sigmoid() > 0.5
    )
    for t in range(2):
        rle = results[0]["segmentations"][t]
        assert isinstance(rle["counts"], str) and rle["size"] == [10, 12]
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), expected[t, 0].numpy())


def test_low_scores_get_none_segmentations_and_padding_is_cropped():
    out = _outputs()
    out["pred_logits"][0, 1, 2] = -7.5  # score below 0.001
    results = postprocess_video(out, 0, input_size=(12, 10), orig_size=(12, 10), top_k=4)
    low = [r for r in results if r["category_id"] == 2]
    assert low and low[0]["segmentations"] == [None, None]
    # input 12x10 inside a padded 16x16 map: the stride-4 crop is [:3, :3] before resizing
    crop = out["pred_masks"][0, 2, :, :3, :3]
    expected = F.interpolate(crop[:, None], (12, 10), mode="bilinear", align_corners=False).sigmoid() > 0.5
    rle = results[0]["segmentations"][0]
    assert np.array_equal(
        mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool), expected[0, 0].numpy()
    )


def test_mask_stride_sets_the_crop_and_defaults_to_what_the_model_recorded():
    """Masks at stride 2 (``model.mask_out_stride=2``): a 16x16 input has an 8x8 mask map, all of it inside the
    input. Cropping it at stride 4 (to 4x4) would drop the object drawn in its bottom-right corner."""
    logits = torch.full((1, 1, 2), -8.0)
    logits[0, 0, 1] = 3.0
    masks = torch.full((1, 1, 1, 8, 8), -5.0)
    masks[0, 0, 0, 5:, 5:] = 5.0
    out = {"pred_logits": logits, "pred_masks": masks, "mask_inputs": {"out_stride": 2}}
    expected = F.interpolate(masks[0, 0][:, None], (16, 16), mode="bilinear", align_corners=False).sigmoid() > 0.5
    for kwargs in ({}, {"mask_stride": 2}):  # recorded by the model, or given
        (entry,) = postprocess_video(out, 0, input_size=(16, 16), orig_size=(16, 16), top_k=1, **kwargs)
        rle = entry["segmentations"][0]
        decoded = mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert decoded[12:, 12:].all() and np.array_equal(decoded, expected[0, 0].numpy())
    # the stride-4 crop keeps only the object-free top-left 4x4 cells: the query is skipped as empty
    assert postprocess_video(out, 0, input_size=(16, 16), orig_size=(16, 16), top_k=1, mask_stride=4) == []
