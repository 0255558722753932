"""Deformable encoder (each frame separately) and the SeqFormer decoder (instance query + per-frame box queries).

Frames are folded into the batch axis (``N = B * T``, clip-major) wherever the official code loops over frames
with shared weights; that is the same computation in one call. Shapes: B clips, T frames, Q queries, C width,
L levels, S = sum of h_l * w_l.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from seqformer.model.box_ops import inverse_sigmoid
from seqformer.model.dropout import Dropout, relu_dropout
from seqformer.model.ms_deform_attn import MSDeformAttn


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class DeformableTransformerEncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention over all levels of one frame, then a ReLU FFN."""

    def __init__(
        self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int, backend: str
    ) -> None:  # noqa: E501
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, backend=backend)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask):  # noqa: ANN001, ANN201
        """``src``/``pos`` ``[N, S, C]``, ``reference_points`` ``[N, S, L, 2]``, ``padding_mask`` ``[N, S]``."""
        value = self.self_attn.project_value(src, padding_mask)
        sampled = self.self_attn.sample(src + pos, reference_points, value, spatial_shapes, level_start_index)
        src = self.norm1(src + self.dropout1(self.self_attn.output_proj(sampled)))
        # FFN on [N*S, C] rows (what nn.Linear does for 3-d inputs) so that its hidden activation is a base tensor
        # and ReLU + dropout can overwrite it in place without a copying backward (see relu_dropout)
        hidden = relu_dropout(
            self.linear1(src.flatten(0, 1)), self.dropout2.p, self.training, inplace=True, fast=self.dropout2.fast
        )
        src2 = self.linear2(hidden).view(src.shape)
        return self.norm2(src + self.dropout3(src2))


class DeformableTransformerEncoder(nn.Module):
    """Stack of encoder layers sharing one set of reference points (pixel centres scaled by valid ratios)."""

    def __init__(self, layer: DeformableTransformerEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers
        self.checkpoint = False  # recompute each layer in the backward (ModelConfig.checkpoint_encoder)

    @staticmethod
    def get_reference_points(spatial_shapes: list[tuple[int, int]], valid_ratios: torch.Tensor) -> torch.Tensor:
        """Normalised pixel centres of every level, ``valid_ratios [B, L, 2]`` -> ``[B, S, L, 2]`` (x, y)."""
        refs = []
        device = valid_ratios.device
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]

    def forward(
        self, src, spatial_shapes_list, spatial_shapes, level_start_index, valid_ratios, pos, padding_mask, num_frames
    ):  # noqa: ANN001, ANN201, E501
        """Encode ``src [B*T, S, C]``; reference points from ``valid_ratios [B, L, 2]`` serve every frame."""
        reference_points = self.get_reference_points(spatial_shapes_list, valid_ratios)
        reference_points = reference_points.repeat_interleave(num_frames, dim=0)  # [B*T, S, L, 2]
        output = src
        recompute = self.checkpoint and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            args = (output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
            if recompute:
                output = torch.utils.checkpoint.checkpoint(layer, *args, use_reentrant=False, preserve_rng_state=True)
            else:
                output = layer(*args)
        return output


class SeqFormerDecoderLayer(nn.Module):
    """One SeqFormer decoder layer (reference §7): instance self-attention, box self-attention per frame,
    deformable cross-attention driven by the box queries, box FFN, temporal aggregation into the instance query."""

    def __init__(
        self,
        d_model: int,
        d_ffn: int,
        dropout: float,
        n_levels: int,
        n_heads: int,
        n_points: int,
        backend: str,
        temporal_aggregation: str = "weighted",
        query_decomposition: bool = True,
    ) -> None:
        super().__init__()
        self.temporal_aggregation = temporal_aggregation
        self.query_decomposition = query_decomposition
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points, backend=backend)
        self.dropout1 = Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1_box = Dropout(dropout)
        self.norm1_box = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.self_attn_box = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2_box = Dropout(dropout)
        self.norm2_box = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear1_box = nn.Linear(d_model, d_ffn)
        self.dropout3_box = Dropout(dropout)
        self.linear2_box = nn.Linear(d_ffn, d_model)
        self.dropout4_box = Dropout(dropout)
        self.norm3_box = nn.LayerNorm(d_model)
        self.time_attention_weights = nn.Linear(d_model, 1)

    @staticmethod
    def _self_attention(
        attn: nn.MultiheadAttention, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # nn.MultiheadAttention is sequence-first here, as officially: [Q, N, C]
        q = (x + pos).transpose(0, 1)
        return attn(q, q, x.transpose(0, 1), attn_mask=mask)[0].transpose(0, 1)

    def _ffn(self, x: torch.Tensor, linear1: nn.Linear, drop: Dropout, linear2: nn.Linear) -> torch.Tensor:
        """``linear2(dropout(relu(linear1(x))))``; the ReLU + dropout overwrite the fresh ``linear1`` output in
        place when no graph is recorded."""
        hidden = relu_dropout(linear1(x), drop.p, self.training, inplace=not torch.is_grad_enabled(), fast=drop.fast)
        return linear2(hidden)

    def forward(
        self,
        tgt,
        tgt_box,
        query_pos,
        reference_points,
        value_memory,
        spatial_shapes,
        level_start_index,
        padding_mask,
        num_frames,
        self_attn_mask=None,
    ):  # noqa: ANN001, ANN201, E501
        """Run one layer.

        Args:
            tgt: ``[B, Q, C]`` instance queries.
            tgt_box: ``[B, Q, C]`` (first layer: one box query for all frames) or ``[B, T, Q, C]``.
            query_pos: ``[B, Q, C]`` query position embedding.
            reference_points: ``[B, T, Q, L, 2|4]`` references already scaled by the valid ratios.
            value_memory: ``[B*T, S, C]`` encoder memory.
            spatial_shapes, level_start_index: int64 ``[L, 2]`` and ``[L]``.
            padding_mask: bool ``[B*T, S]``.
            num_frames: T.
            self_attn_mask: bool ``[Q, Q]`` (True: query i does not attend to query j) for both self-attentions,
                or None (official).

        Returns:
            ``(tgt [B, Q, C], tgt_box [B, T, Q, C])``.
        """
        batch_size, num_queries, c = tgt.shape
        tgt = self.norm2(tgt + self.dropout2(self._self_attention(self.self_attn, tgt, query_pos, self_attn_mask)))
        if tgt_box.dim() == 3:
            # first layer: box self-attention once, its query drives the sampling in every frame
            tgt_box = self.norm2_box(
                tgt_box
                + self.dropout2_box(self._self_attention(self.self_attn_box, tgt_box, query_pos, self_attn_mask))
            )
            box_query, repeat = tgt_box + query_pos, num_frames
        else:
            flat_box = tgt_box.flatten(0, 1)  # [B*T, Q, C]: per-frame self-attention with shared weights
            flat_pos = query_pos.repeat_interleave(num_frames, dim=0)
            flat_box = self.norm2_box(
                flat_box
                + self.dropout2_box(self._self_attention(self.self_attn_box, flat_box, flat_pos, self_attn_mask))
            )
            tgt_box = flat_box.view(batch_size, num_frames, num_queries, c)
            box_query, repeat = flat_box + flat_pos, 1
        value = self.cross_attn.project_value(value_memory, padding_mask)
        sampled = self.cross_attn.sample(
            box_query, reference_points.flatten(0, 1), value, spatial_shapes, level_start_index, repeat=repeat
        ).view(batch_size, num_frames, num_queries, c)
        attn_inst = self.cross_attn.output_proj(sampled)
        attn_box = self.cross_attn.output_proj_box(sampled)
        if tgt_box.dim() == 3:
            tgt_box = tgt_box.unsqueeze(1)
        tgt_box = self.norm1_box(tgt_box + self.dropout1_box(attn_box))
        tgt_box2 = self._ffn(tgt_box, self.linear1_box, self.dropout3_box, self.linear2_box)
        tgt_box = self.norm3_box(tgt_box + self.dropout4_box(tgt_box2))
        if self.temporal_aggregation == "weighted":
            # temporal aggregation: softmax over frames of a score from the updated box query weights attn_inst
            time_weight = F.softmax(self.time_attention_weights(tgt_box), 1)  # [B, T, Q, 1]
            aggregated = (attn_inst * time_weight).sum(1)
        else:  # ablation: plain average over frames (time_attention_weights exists but is unused)
            aggregated = attn_inst.mean(1)
        tgt = self.norm1(tgt + self.dropout1(aggregated))
        if not self.query_decomposition:
            # ablation: one box query per instance shared by all frames instead of one per frame
            tgt_box = tgt_box.mean(1, keepdim=True).expand_as(tgt_box).contiguous()
        tgt2 = self._ffn(tgt, self.linear1, self.dropout3, self.linear2)
        tgt = self.norm3(tgt + self.dropout4(tgt2))
        return tgt, tgt_box


class SeqFormerDecoder(nn.Module):
    """Decoder stack with iterative box refinement through ``bbox_embed`` (set by the model, shared with its heads)."""

    def __init__(self, layer: SeqFormerDecoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers
        self.bbox_embed: nn.ModuleList | None = None

    def forward(
        self,
        tgt,
        reference_points,
        memory,
        spatial_shapes,
        level_start_index,
        valid_ratios,
        query_pos,
        padding_mask,
        num_frames,
        self_attn_mask=None,
    ):  # noqa: ANN001, ANN201, E501
        """Run all layers.

        Args:
            tgt: ``[B, Q, C]`` initial content query (shared by the instance and box queries).
            reference_points: ``[B, T, Q, 2]`` initial references in [0, 1].
            memory: ``[B*T, S, C]``; valid_ratios ``[B, L, 2]``; query_pos ``[B, Q, C]``; padding_mask ``[B*T, S]``.

        Returns:
            dict with ``hs`` list of ``[B, Q, C]``, ``hs_box`` list of ``[B, T, Q, C]``, ``references`` list of the
            reference each layer used (``[B, T, Q, 2|4]``) and ``coords`` list of refined boxes ``[B, T, Q, 4]``
            (with grad; empty when there is no box refinement).
        """
        output, output_box = tgt, tgt
        hs, hs_box, references, coords = [], [], [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_input = reference_points[:, :, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None, None]
            else:
                ref_input = reference_points[:, :, :, None] * valid_ratios[:, None, None]
            output, output_box = layer(
                output,
                output_box,
                query_pos,
                ref_input,
                memory,
                spatial_shapes,
                level_start_index,
                padding_mask,
                num_frames,
                self_attn_mask,
            )
            references.append(reference_points)
            hs.append(output)
            hs_box.append(output_box)
            if self.bbox_embed is not None:
                coord = refine_boxes(self.bbox_embed[lid](output_box), reference_points)
                coords.append(coord)
                reference_points = coord.detach()
        return {"hs": hs, "hs_box": hs_box, "references": references, "coords": coords}


def refine_boxes(delta: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``sigmoid(delta + inverse_sigmoid(reference))``; a 2-d reference only shifts the centre (x, y)."""
    ref = inverse_sigmoid(reference)
    if ref.shape[-1] == 4:
        return (delta + ref).sigmoid()
    return torch.cat([delta[..., :2] + ref, delta[..., 2:]], -1).sigmoid()


class DeformableTransformer(nn.Module):
    """Level embedding, encoder, decoder and the initial reference-point projection (``detr.transformer``)."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        super().__init__()
        self.d_model = cfg.hidden_dim
        self.nhead = cfg.nheads
        self.num_feature_levels = cfg.num_feature_levels
        enc_layer = DeformableTransformerEncoderLayer(
            cfg.hidden_dim,
            cfg.dim_feedforward,
            cfg.dropout,
            cfg.num_feature_levels,
            cfg.nheads,
            cfg.enc_n_points,
            cfg.msda_backend,
        )
        self.encoder = DeformableTransformerEncoder(enc_layer, cfg.enc_layers)
        self.encoder.checkpoint = cfg.checkpoint_encoder
        dec_layer = SeqFormerDecoderLayer(
            cfg.hidden_dim,
            cfg.dim_feedforward,
            cfg.dropout,
            cfg.num_feature_levels,
            cfg.nheads,
            cfg.dec_n_points,
            cfg.msda_backend,
            temporal_aggregation=cfg.temporal_aggregation,
            query_decomposition=cfg.query_decomposition,
        )
        self.decoder = SeqFormerDecoder(dec_layer, cfg.dec_layers)
        self.level_embed = nn.Parameter(torch.empty(cfg.num_feature_levels, cfg.hidden_dim))
        self.reference_points = nn.Linear(cfg.hidden_dim, 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: xavier on every >=2-d parameter, then the deformable-attention reset (§9)."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def valid_ratio(mask: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` padding mask -> ``[B, 2]`` (valid_w / w, valid_h / h) from column 0 and row 0."""
        _, h, w = mask.shape
        valid_h = torch.sum(~mask[:, :, 0], 1)
        valid_w = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def encode(self, srcs, masks, poses, batch_size: int, num_frames: int):  # noqa: ANN001, ANN201
        """Flatten levels and run the encoder.

        Args:
            srcs, poses: lists of ``[B*T, C, h_l, w_l]``; masks: list of bool ``[B*T, h_l, w_l]``.

        Returns:
            dict: ``memory [B*T, S, C]``, ``mask_flatten [B*T, S]``, ``spatial_shapes`` int64 ``[L, 2]``,
            ``shapes`` (list of (h, w)), ``level_start_index [L]``, ``valid_ratios [B, L, 2]``.
        """
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        src_flatten = torch.cat([src.flatten(2).transpose(1, 2) for src in srcs], 1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flatten = torch.cat(
            [pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, pos in enumerate(poses)], 1
        )
        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        # valid ratios come from frame 0 of every clip and serve all its frames (official quirk)
        valid_ratios = torch.stack(
            [self.valid_ratio(m.view(batch_size, num_frames, *m.shape[-2:])[:, 0]) for m in masks], 1
        )
        memory = self.encoder(
            src_flatten, shapes, spatial_shapes, level_start_index, valid_ratios, pos_flatten, mask_flatten, num_frames
        )
        return {
            "memory": memory,
            "mask_flatten": mask_flatten,
            "spatial_shapes": spatial_shapes,
            "shapes": shapes,
            "level_start_index": level_start_index,
            "valid_ratios": valid_ratios,
        }

    def decode(
        self,
        enc: dict,
        query_embed: torch.Tensor,
        batch_size: int,
        num_frames: int,
        self_attn_mask: torch.Tensor | None = None,
    ) -> dict:
        """Run the decoder from ``query_embed [Q, 2C]`` (position half, content half) on the encoder output;
        ``self_attn_mask`` bool ``[Q, Q]`` blocks query pairs in the decoder's self-attentions (None officially)."""
        query_pos, tgt = torch.split(query_embed, self.d_model, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch_size, -1, -1)
        tgt = tgt.unsqueeze(0).expand(batch_size, -1, -1)
        init_reference = self.reference_points(query_pos).sigmoid()
        init_reference = init_reference.unsqueeze(1).repeat(1, num_frames, 1, 1)  # [B, T, Q, 2]
        out = self.decoder(
            tgt,
            init_reference,
            enc["memory"],
            enc["spatial_shapes"],
            enc["level_start_index"],
            enc["valid_ratios"],
            query_pos,
            enc["mask_flatten"],
            num_frames,
            self_attn_mask,
        )
        out["init_reference"] = init_reference
        return out
