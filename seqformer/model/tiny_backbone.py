"""A narrow ResNet-10 for CPU demos and tests (not in the paper's zoo).

Same module names as torchvision's ResNet (``conv1, bn1, relu, maxpool, layer1..layer4``), so it plugs into the
same intermediate-layer getter, but with one BasicBlock per stage and widths 32/64/128/256: about 1/8 of ResNet-18's
compute, which lets a SeqFormer trained from random initialisation on 2 CPU cores take several optimiser steps per
second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models.resnet import BasicBlock

TINY_WIDTHS = (32, 64, 128, 256)


def _stage(inplanes: int, planes: int, stride: int, norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), norm_layer(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride=stride, downsample=downsample, norm_layer=norm_layer))


class TinyResNet(nn.Module):
    """ResNet-10 body with widths :data:`TINY_WIDTHS` (strides 4, 8, 16, 32 for layer1..layer4)."""

    def __init__(self, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        w = TINY_WIDTHS
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(w[0], w[0], 1, norm_layer)
        self.layer2 = _stage(w[0], w[1], 2, norm_layer)
        self.layer3 = _stage(w[1], w[2], 2, norm_layer)
        self.layer4 = _stage(w[2], w[3], 2, norm_layer)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def tiny_resnet(
    weights: Any = None, replace_stride_with_dilation: list[bool] | None = None, norm_layer: Any = nn.BatchNorm2d
) -> TinyResNet:
    """torchvision-style constructor (``weights`` must be None: there are no pretrained weights)."""
    if weights is not None:
        raise ValueError("tiny_resnet has no pretrained weights; use model.pretrained_backbone=null")
    if replace_stride_with_dilation and any(replace_stride_with_dilation):
        raise ValueError("model.dilation is not supported by model.backbone=tiny_resnet")
    return TinyResNet(norm_layer=norm_layer)
