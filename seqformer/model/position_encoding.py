"""Position encodings of the feature maps (sine with the official -0.5 offset, or learned tables)."""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-d sine encoding: channels ``[0, C/2)`` encode y, ``[C/2, C)`` encode x, sin/cos interleaved."""

    def __init__(self, num_pos_feats: int = 128, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi  # the official flag position_embedding_scale is ignored; 2*pi is hard-wired

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Encode a padding mask.

        Args:
            mask: bool ``[N, h, w]``, True on padded positions.

        Returns:
            float32 ``[N, 2 * num_pos_feats, h, w]``.
        """
        not_mask = (~mask).float()
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        # Deformable-DETR normalisation: the -0.5 offset centres each position in its cell (DETR has none).
        y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        # [N, h, w, F/2, 2] -> [N, h, w, F]: sin of even and cos of odd channels, interleaved
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute encoding from two 50-row tables (x first, then y), as DETR's ``learned`` option."""

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(50, num_pos_feats)
        self.col_embed = nn.Embedding(50, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Encode positions of ``mask`` (bool ``[N, h, w]``, h and w at most 50) -> ``[N, 2F, h, w]``."""
        n, h, w = mask.shape
        if h > 50 or w > 50:
            raise ValueError(f"learned position embedding supports feature maps up to 50x50, got {h}x{w}")
        x_emb = self.col_embed(torch.arange(w, device=mask.device))
        y_emb = self.row_embed(torch.arange(h, device=mask.device))
        pos = torch.cat([x_emb.unsqueeze(0).expand(h, -1, -1), y_emb.unsqueeze(1).expand(-1, w, -1)], dim=-1)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)


def build_position_encoding(kind: str, hidden_dim: int) -> nn.Module:
    """``sine`` or ``learned`` encoding with ``hidden_dim // 2`` features per axis."""
    if kind == "sine":
        return PositionEmbeddingSine(hidden_dim // 2)
    if kind == "learned":
        return PositionEmbeddingLearned(hidden_dim // 2)
    raise ValueError(f"model.position_embedding must be 'sine' or 'learned', got {kind!r}")
