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

    With frozen batch norm each norm is folded into the convolution before it (``fold_frozen_norms``, see
    :func:`_conv_frozen_norm`): one pass over each activation instead of three to four, the same values to float32
    rounding, the same gradients for the parameters (the folding is part of the autograd graph).
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
        input_edges: bool = False,
        input_rgb: bool = True,
    ) -> None:
        super().__init__()
        if not (input_rgb or input_edges):
            raise ValueError("the backbone needs an input: input_rgb or input_edges (or both)")
        norm_layer = functools.partial(FrozenBatchNorm2d, inplace=True) if frozen_batch_norm else nn.BatchNorm2d
        net = _RESNETS[name](weights=None, replace_stride_with_dilation=[False, False, dilation], norm_layer=norm_layer)
        self.input_edges, self.input_rgb = input_edges, input_rgb
        if input_edges:  # not official: RGB + edge channel, or the edge channel alone (ModelConfig.input_edges/rgb)
            stem = net.conv1
            channels = 4 if input_rgb else 1
            net.conv1 = nn.Conv2d(channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
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
        # frozen norms folded into the convolutions (see _conv_frozen_norm); False runs the modules one by one
        self.fold_frozen_norms = frozen_batch_norm
        self.strides = [8, 16, 16 if dilation else 32]
        self.num_channels = {
            "tiny_resnet": list(TINY_WIDTHS[1:]),
            "resnet18": [128, 256, 512],
            "resnet34": [128, 256, 512],
        }.get(name, [512, 1024, 2048])
        self.stride4_channels = {"tiny_resnet": TINY_WIDTHS[0], "resnet18": 64, "resnet34": 64}.get(name, 256)

    def forward(
        self, images: torch.Tensor, *, with_stride4: bool = False, padding_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """``[N, 3, H, W]`` -> C3, C4, C5 feature maps (strides 8, 16, 32), in ``self.memory_format``; with
        ``with_stride4`` the C2 map (stride 4, ``layer1``) comes first. ``padding_mask`` (bool ``[N, H, W]``, True
        on padding) confines the ``input_edges`` channel to each frame's own pixels."""
        if self.input_edges:
            edges = padded_edge_channel(images, padding_mask)
            images = torch.cat([images, edges], 1) if self.input_rgb else edges
        images = images.contiguous(memory_format=self.memory_format)
        if self.fold_frozen_norms:
            outs = _folded_resnet_forward(self.body, images)
        else:
            out = self.body(images)
            outs = [out["0"], out["1"], out["2"], out["3"]]
        return outs if with_stride4 else outs[1:]


_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def edge_channel(images: torch.Tensor) -> torch.Tensor:
    """Colour-invariant edge map ``[N, 1, H, W]`` of ``[N, 3, H, W]`` images (``ModelConfig.input_edges``).

    Sobel x and y gradients of each colour channel (borders replicated), the magnitude over the six, divided by its
    maximum over the frame and mapped to ``[-1, 3]`` (zero-centred like the normalised colour channels). An object
    boundary gives the same response whatever the two colours, which makes shape the easy thing to learn. Computed in
    the images' dtype also under autocast (the Sobel filter is part of the input, not a learned layer).
    """
    sobel_x = torch.tensor(_SOBEL_X, dtype=images.dtype, device=images.device)
    kernels = torch.stack([sobel_x, sobel_x.t()])[:, None].repeat(images.shape[1], 1, 1, 1)  # [2C, 1, 3, 3]
    with torch.autocast(device_type=images.device.type, enabled=False):
        grads = F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), kernels, groups=images.shape[1])
    magnitude = grads.square().sum(1, keepdim=True).sqrt()
    peak = magnitude.flatten(1).amax(1).clamp(min=1e-6)[:, None, None, None]
    return magnitude / peak * 4 - 1


def padded_edge_channel(images: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`edge_channel` of each frame's unpadded top-left region; ``-1`` (no edge) on padding.

    A clip padded to its batch partner's size then gets no edge along the padding border, and that border does not
    enter the per-frame maximum that scales the channel: a padded frame sees the same channel as the frame alone.
    """
    if padding_mask is None or not bool(padding_mask.any()):
        return edge_channel(images)
    valid = ~padding_mask
    heights = valid.any(2).sum(1).tolist()  # rows with a valid pixel (padding sits bottom and right)
    widths = valid.any(1).sum(1).tolist()
    out = images.new_full((images.shape[0], 1, *images.shape[-2:]), -1.0)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(zip(heights, widths)):
        groups.setdefault(size, []).append(i)
    for (h, w), index in groups.items():
        if h == 0 or w == 0:
            continue
        rows = torch.tensor(index, device=images.device)
        out[rows, :, :h, :w] = edge_channel(images[rows, :, :h, :w])
    return out


def _conv_frozen_norm(
    conv: nn.Conv2d,
    norm: FrozenBatchNorm2d,
    x: torch.Tensor,
    *,
    relu: bool,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``relu?(norm(conv(x)) [+ residual])`` computed as one convolution with the norm folded into it.

    ``norm(conv(x)) = conv(x) * s + t`` with ``s = weight * rsqrt(running_var + eps)``, ``t = bias - running_mean * s``
    (the official FrozenBatchNorm2d formula) equals ``conv(x; W * s) + t``: the convolution gets the scaled weight
    and ``t`` as its bias, so the output is written once. Without autograd (inference, and the frozen stem and
    layer1 in training) on float32 CPU tensors, oneDNN also applies the residual sum and the ReLU while the output
    is in cache (``mkldnn._convolution_pointwise``). Under autograd the scaled weight is part of the graph, so the
    gradients of ``conv.weight`` and of the input are those of the unfolded modules (to rounding).

    Args:
        conv: a bias-free convolution (torchvision ResNet layout).
        norm: the frozen norm that follows it.
        x: ``[N, C_in, H, W]`` input.
        relu: apply ReLU at the end.
        residual: ``[N, C_out, H', W']`` added before the ReLU (the bottleneck's identity branch).
    """
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    weight = conv.weight * scale.reshape(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    args = (conv.padding, conv.stride, conv.dilation, conv.groups)
    tracked = torch.is_grad_enabled() and (
        weight.requires_grad or x.requires_grad or (residual is not None and residual.requires_grad)
    )
    if (
        not tracked
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and not torch.is_autocast_enabled("cpu")
        and isinstance(conv.padding, tuple)
    ):
        weight = (
            weight.contiguous(memory_format=torch.channels_last)
            if x.is_contiguous(memory_format=torch.channels_last)
            else weight.contiguous()
        )
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *args, "relu" if relu else "none", [], "")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual, weight, bias, *args, "add", None, "relu" if relu else "none", [], ""
        )
    out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        out = out.add_(residual)  # the convolution's output is fresh and its backward does not read it
    return out.relu_() if relu else out


def _folded_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision BasicBlock / Bottleneck with frozen norms folded into their convolutions."""
    identity = x
    if block.downsample is not None:
        identity = _conv_frozen_norm(block.downsample[0], block.downsample[1], x, relu=False)
    if hasattr(block, "conv3"):  # Bottleneck
        out = _conv_frozen_norm(block.conv1, block.bn1, x, relu=True)
        out = _conv_frozen_norm(block.conv2, block.bn2, out, relu=True)
        return _conv_frozen_norm(block.conv3, block.bn3, out, relu=True, residual=identity)
    out = _conv_frozen_norm(block.conv1, block.bn1, x, relu=True)
    return _conv_frozen_norm(block.conv2, block.bn2, out, relu=True, residual=identity)


def _folded_resnet_forward(body: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The ResNet body (stem, layer1-4) with folded frozen norms -> layer1, layer2, layer3, layer4 outputs."""
    x = _conv_frozen_norm(body.conv1, body.bn1, images, relu=True)
    x = body.maxpool(x)
    outs = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(body, name):
            x = _folded_block(block, x)
        outs.append(x)
    return outs


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
        return self.forward_with_stride4(images, mask, with_stride4=False)[1:]

    def forward_with_stride4(
        self, images: torch.Tensor, mask: torch.Tensor, *, with_stride4: bool = True
    ) -> tuple[torch.Tensor | None, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """As :meth:`forward`, plus the backbone's stride-4 map first (None unless ``with_stride4``; ResNets only)."""
        feats = self[0](images, with_stride4=with_stride4, padding_mask=mask)
        stride4 = feats.pop(0) if with_stride4 else None
        masks = [resize_mask(mask, f.shape[-2:]) for f in feats]
        poses = [self[1](m).to(f.dtype) for f, m in zip(feats, masks)]
        return stride4, feats, masks, poses


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
    input_edges: bool = False,
    input_rgb: bool = True,
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
            input_edges=input_edges,
            input_rgb=input_rgb,
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
