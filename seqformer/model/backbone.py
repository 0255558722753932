"""Backbones with the official module tree (``detr.backbone.0.body.*``) and the position-encoding joiner.

ResNet-50/101 and ResNeXt-101 64x4d come from torchvision with every BatchNorm replaced by
:class:`FrozenBatchNorm2d`; Swin-L is :mod:`seqformer.model.swin`. Each returns the stride-4/8/16/32 stages; only
stride 8/16/32 feed the transformer (the stride-4 stage is computed because the next stage needs it).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter

from seqformer.model.position_encoding import build_position_encoding
from seqformer.model.tiny_backbone import TINY_WIDTHS, tiny_resnet

logger = logging.getLogger(__name__)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters: ``y = x * s + (b - mean * s)``.

    ``s = weight * rsqrt(running_var + eps)``. The buffers are state (loaded from checkpoints), never trained;
    ``num_batches_tracked`` keys of ordinary BatchNorm checkpoints are dropped on load.

    With ``inplace=True`` the input is overwritten (``x.mul_(s).add_(b)``, the same two roundings, so the same
    values). The ResNet backbones use it: every norm there reads a fresh convolution output that nothing else
    holds (a convolution keeps its input, not its output, for the backward), and at stride 4 a new output tensor
    costs more in page faults than the arithmetic itself.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, *, inplace: bool = False) -> None:
        super().__init__()
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.eps = eps
        self.inplace = inplace

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs):  # noqa: ANN001
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``[N, C, H, W]``."""
        scale = self.weight.reshape(1, -1, 1, 1) * (self.running_var.reshape(1, -1, 1, 1) + self.eps).rsqrt()
        bias = self.bias.reshape(1, -1, 1, 1) - self.running_mean.reshape(1, -1, 1, 1) * scale
        if self.inplace:
            return x.mul_(scale).add_(bias)
        return x * scale + bias


_RESNETS: dict[str, Any] = {
    "tiny_resnet": tiny_resnet,
    # resnet18 / resnet34 (BasicBlock, 128/256/512 channels) are not in the paper's zoo; they make small CPU models
    # such as the demo's possible.
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnext101": torchvision.models.resnext101_64x4d,
}


class ResNetBackbone(nn.Module):
    """torchvision ResNet/ResNeXt body returning layer1..layer4 as ``"0".."3"``; stem and layer1 frozen.

    With ``channels_last`` (the default) weights and activations are kept NHWC: oneDNN's convolutions then skip
    the layout reorders they do for NCHW on every call (about 25% less CPU time for R50 inference on 360x640
    clips, 13% for a training step) and the flattened features need no transpose copy. The results differ from
    NCHW by float32 rounding only (a different summation order); values and parameter names are unchanged.
    """

    def __init__(
        self,
        name: str,
        *,
        train_backbone: bool,
        dilation: bool,
        frozen_batch_norm: bool = True,
        freeze_stem: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        norm_layer = functools.partial(FrozenBatchNorm2d, inplace=True) if frozen_batch_norm else nn.BatchNorm2d
        net = _RESNETS[name](weights=None, replace_stride_with_dilation=[False, False, dilation], norm_layer=norm_layer)
        for param_name, param in net.named_parameters():
            # official rule: only layer2-4 train (stem conv1 and layer1 stay frozen); freeze_stem=False trains all
            # (models trained from random initialisation)
            if not train_backbone or (
                freeze_stem and "layer2" not in param_name and "layer3" not in param_name and "layer4" not in param_name
            ):
                param.requires_grad_(False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        net.to(memory_format=self.memory_format)
        self.body = IntermediateLayerGetter(
            net, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        )
        self.strides = [8, 16, 16 if dilation else 32]
        self.num_channels = {
            "tiny_resnet": list(TINY_WIDTHS[1:]),
            "resnet18": [128, 256, 512],
            "resnet34": [128, 256, 512],
        }.get(name, [512, 1024, 2048])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[N, 3, H, W]`` -> C3, C4, C5 feature maps (strides 8, 16, 32), in ``self.memory_format``."""
        out = self.body(images.contiguous(memory_format=self.memory_format))
        return [out["1"], out["2"], out["3"]]


class Joiner(nn.Sequential):
    """``[backbone, position_encoding]`` as the official Joiner (the names give ``detr.backbone.0.body.*``)."""

    def __init__(self, backbone: nn.Module, position_embedding: nn.Module) -> None:
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:  # noqa: E501
        """Run the backbone and derive per-level padding masks and position encodings.

        Args:
            images: ``[N, 3, H, W]`` normalised frames (N = clips * frames, clip-major).
            mask: bool ``[N, H, W]``, True on padding.

        Returns:
            features ``[N, C_l, h_l, w_l]``, masks bool ``[N, h_l, w_l]`` and positions ``[N, C, h_l, w_l]`` for
            the three stages used.
        """
        feats = self[0](images)
        masks = [resize_mask(mask, f.shape[-2:]) for f in feats]
        poses = [self[1](m).to(f.dtype) for f, m in zip(feats, masks)]
        return feats, masks, poses


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Legacy-nearest resize of a bool ``[N, H, W]`` padding mask to ``size`` (source index ``floor(i*in/out)``)."""
    return F.interpolate(mask[None].float(), size=tuple(size)).to(torch.bool)[0]


def build_backbone(
    name: str,
    *,
    hidden_dim: int,
    position_embedding: str = "sine",
    train_backbone: bool = True,
    dilation: bool = False,
    frozen_batch_norm: bool = True,
    freeze_stem: bool = True,
    pretrained: str | None = None,
) -> Joiner:
    """Build ``Joiner(backbone, position encoding)``; ``pretrained`` is a local weight file (never downloaded)."""
    if name == "swin_l":
        from seqformer.model.swin import SwinBackbone

        body: nn.Module = SwinBackbone()
    elif name in _RESNETS:
        body = ResNetBackbone(
            name,
            train_backbone=train_backbone,
            dilation=dilation,
            frozen_batch_norm=frozen_batch_norm,
            freeze_stem=freeze_stem,
        )
    else:
        raise ValueError(f"model.backbone must be one of {sorted([*_RESNETS, 'swin_l'])}, got {name!r}")
    if pretrained is not None:
        load_backbone_weights(body.body, pretrained)
    return Joiner(body, build_position_encoding(position_embedding, hidden_dim))


def load_backbone_weights(body: nn.Module, path: str) -> None:
    """Load ImageNet weights (torchvision or Swin key names, optionally under ``model``) from a local file.

    Classifier keys (``fc.*``, ``head.*``, ``norm.*`` of the Swin classifier) are ignored; any other missing or
    unexpected key raises ValueError naming it.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"model.pretrained_backbone: no such file {path!r}; give a local ImageNet weight file")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "norm.")) and k not in ("norm",)}
    state = {k: v for k, v in state.items() if not k.endswith(("num_batches_tracked", "attn_mask"))}
    result = body.load_state_dict(state, strict=False)
    own = set(body.state_dict())
    missing = [k for k in result.missing_keys if not k.startswith("norm")]  # Swin's per-stage output norms are new
    if missing or result.unexpected_keys:
        raise ValueError(
            f"model.pretrained_backbone {path!r} does not fit the backbone: missing {missing[:10]}, "
            f"unexpected {result.unexpected_keys[:10]} ({len(own)} keys expected)"
        )
    logger.info("loaded backbone weights from %s", path)
