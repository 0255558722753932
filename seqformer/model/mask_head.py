"""Dynamic mask head: the mask feature branch (``MaskHeadSmallConv``) and the per-query dynamic 1x1 convolutions.

The dynamic part is a pure function (:func:`dynamic_mask_logits`) so the criterion can compute masks for matched
queries only, without the model object. The official code runs the three dynamic 1x1 convolutions as grouped
convolutions with one group per query; here they are batched matrix products (same arithmetic, one ``bmm`` per
layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DYNAMIC_CHANNELS = 8  # hidden channels of the dynamic convs (official ``dynamic_mask_channels``)


def dynamic_param_layout(in_channels: int, rel_coord: bool = True) -> tuple[list[int], list[int]]:
    """Sizes of the generated weights and biases of the three dynamic convs.

    Returns:
        ``(weight_nums, bias_nums)``; for 8 feature channels with coordinates ``([80, 64, 8], [8, 8, 1])``
        (169 parameters: all weights first, then all biases).
    """
    first_in = in_channels + 2 if rel_coord else in_channels
    c = DYNAMIC_CHANNELS
    return [first_in * c, c * c, c], [c, c, 1]


class MaskHeadSmallConv(nn.Module):
    """FPN-like mask feature branch on the encoder memory of levels s8/s16/s32 (``mask_head.*``).

    All convs are 3x3 with padding 1 (``dcn`` is an ordinary conv despite its name); upsampling is legacy nearest.
    With ``fine_channels`` (not official; ``ModelConfig.mask_feat_stride=4``) a stride-4 backbone map is projected
    by ``fine_proj`` (1x1), added to the upsampled stride-8 result and mixed by ``fine`` (3x3) before ``lay1``, so
    the output is at stride 4.
    """

    def __init__(self, dim: int, out_channels: int, fine_channels: int | None = None) -> None:
        super().__init__()
        self.lay1 = nn.Conv2d(dim, dim // 4, 3, padding=1)
        self.lay2 = nn.Conv2d(dim // 4, out_channels, 3, padding=1)
        self.lay3 = nn.Conv2d(dim, dim, 3, padding=1)
        self.lay4 = nn.Conv2d(dim, dim, 3, padding=1)
        self.dcn = nn.Conv2d(dim, dim, 3, padding=1)
        if fine_channels is not None:
            self.fine_proj = nn.Conv2d(fine_channels, dim, 1)
            self.fine = nn.Conv2d(dim, dim, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.constant_(m.bias, 0)

    def forward(self, feats: list[torch.Tensor], fine: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse ``[s8, s16, s32]`` maps (each ``[N, C, h_l, w_l]``) -> ReLU-ed ``[N, out_channels, h_s8, w_s8]``.

        ``fine``: the ``[N, C_fine, h_s4, w_s4]`` backbone map, required exactly when the head was built with
        ``fine_channels``; the output is then ``[N, out_channels, h_s4, w_s4]``.
        """
        if (fine is not None) != hasattr(self, "fine"):
            raise ValueError("MaskHeadSmallConv: pass the stride-4 map exactly when built with fine_channels")
        x = F.relu(self.lay3(feats[2]))
        x = F.relu(self.lay4(feats[1] + F.interpolate(x, size=feats[1].shape[-2:], mode="nearest")))
        x = F.relu(self.dcn(feats[0] + F.interpolate(x, size=feats[0].shape[-2:], mode="nearest")))
        if fine is not None:
            fine = self.fine_proj(fine.contiguous())
            x = F.relu(self.fine(fine + F.interpolate(x, size=fine.shape[-2:], mode="nearest")))
        x = F.relu(self.lay1(x))
        return F.relu(self.lay2(x))


def aligned_bilinear(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """CondInst aligned bilinear upsampling of ``[N, C, h, w]`` by an integer factor -> ``[N, C, f*h, f*w]``.

    Replicate-pad one row/column bottom-right, bilinear with ``align_corners=True`` to ``f*h+1``, replicate-pad
    ``f // 2`` top-left, crop. For f = 2 output pixel i reads the input at position ``max(0, (i - 1) / 2)``.
    """
    if factor == 1:
        return tensor
    h, w = tensor.shape[-2:]
    tensor = F.pad(tensor, pad=(0, 1, 0, 1), mode="replicate")
    oh, ow = factor * h + 1, factor * w + 1
    tensor = F.interpolate(tensor, size=(oh, ow), mode="bilinear", align_corners=True)
    tensor = F.pad(tensor, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return tensor[:, :, : oh - 1, : ow - 1]


def compute_locations(h: int, w: int, stride: int, device: torch.device) -> torch.Tensor:
    """Pixel centres of an ``h x w`` map of the given stride -> ``[h*w, 2]`` (x, y) = ``(s*j + s//2, s*i + s//2)``."""
    shifts_x = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def parse_dynamic_params(
    params: torch.Tensor, in_channels: int, rel_coord: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split ``[n, num_params]`` into three ``(weight [n, out, in], bias [n, out, 1])`` pairs (out-channel-major)."""
    weight_nums, bias_nums = dynamic_param_layout(in_channels, rel_coord)
    if params.shape[-1] != sum(weight_nums) + sum(bias_nums):
        raise ValueError(f"expected {sum(weight_nums) + sum(bias_nums)} dynamic parameters, got {params.shape[-1]}")
    splits = torch.split_with_sizes(params, weight_nums + bias_nums, dim=1)
    n = params.shape[0]
    layers = []
    for i, (w, b) in enumerate(zip(splits[:3], splits[3:])):
        out = bias_nums[i]
        layers.append((w.reshape(n, out, -1), b.reshape(n, out, 1)))
    return layers


def dynamic_mask_logits(
    mask_feats: torch.Tensor,
    params: torch.Tensor,
    ref_points: torch.Tensor,
    *,
    rel_coord: bool = True,
    feat_stride: int = 8,
    out_stride: int = 4,
) -> torch.Tensor:
    """Mask logits of ``n`` queries on one frame.

    Args:
        mask_feats: ``[c, h, w]`` ReLU-ed mask features at ``feat_stride``.
        params: ``[n, num_params]`` dynamic parameters (all weights, then all biases).
        ref_points: ``[n, 2]`` instance positions in un-normalised pixels (x, y) of the unpadded image.
        rel_coord: prepend ``ref - location`` (raw pixels, x then y) as two input channels.

    Returns:
        ``[n, h * feat_stride / out_stride, w * feat_stride / out_stride]`` logits.
    """
    c, h, w = mask_feats.shape
    n = params.shape[0]
    if n == 0:
        factor = feat_stride // out_stride
        return mask_feats.new_zeros((0, h * factor, w * factor))
    feats = mask_feats.reshape(1, c, h * w).expand(n, c, h * w)
    if rel_coord:
        locations = compute_locations(h, w, feat_stride, mask_feats.device)  # [h*w, 2]
        rel = (ref_points[:, :, None] - locations.t()[None]).to(mask_feats.dtype)  # [n, 2, h*w]
        x = torch.cat([rel, feats], 1)
    else:
        x = feats
    layers = parse_dynamic_params(params, c, rel_coord)
    for i, (weight, bias) in enumerate(layers):
        x = torch.baddbmm(bias.to(x.dtype), weight.to(x.dtype), x)
        if i < len(layers) - 1:
            x = x.relu_()  # baddbmm's output is fresh (not a view) and its backward does not read it
    return aligned_bilinear(x.view(n, 1, h, w), feat_stride // out_stride)[:, 0]


def clip_mask_logits(
    mask_feats: torch.Tensor,
    params: torch.Tensor,
    ref_points: torch.Tensor,
    *,
    rel_coord: bool = True,
    feat_stride: int = 8,
    out_stride: int = 4,
) -> torch.Tensor:
    """Mask logits of ``n`` queries on every frame of one clip.

    Args:
        mask_feats: ``[T, c, h, w]``; params ``[n, num_params]``; ref_points ``[T, n, 2]`` pixels.

    Returns:
        ``[n, T, h4, w4]`` logits.
    """
    frames = [
        dynamic_mask_logits(
            mask_feats[t], params, ref_points[t], rel_coord=rel_coord, feat_stride=feat_stride, out_stride=out_stride
        )
        for t in range(mask_feats.shape[0])
    ]
    return torch.stack(frames, 1)
