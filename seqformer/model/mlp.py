"""The small multi-layer perceptron used by the box heads and the dynamic-parameter controller."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (parameter names ``layers.{i}`` as officially)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim, *dims], [*dims, output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to ``[..., input_dim]`` -> ``[..., output_dim]``."""
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x
