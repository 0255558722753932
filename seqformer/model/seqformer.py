"""The SeqFormer model: backbone, deformable transformer, heads and the dynamic mask head (official module tree).

Module tree (and so state-dict keys) mirror the official checkpoint: an inner ``detr`` module holds backbone,
input projections, transformer, class/box heads and the query embedding; ``controller`` and ``mask_head`` sit at
the top level. Loss and matching are not in ``forward`` (see ``criterion.py``).

Outputs of :meth:`SeqFormer.forward` (B clips, T frames, Q queries, K classes):

- ``pred_logits [B, Q, K]``, ``pred_boxes [B, T, Q, 4]`` (normalised cxcywh of the unpadded clip) of the last layer;
- ``pred_queries [B, Q, C]`` the last decoder layer's instance query embeddings (the class head's input);
- ``pred_masks [B, Q, T, H/4, W/4]`` mask logits of all queries of the last layer (eval mode only, or always with
  the non-official ``mask_class_head``, which classifies them; H, W the padded
  size, a multiple of ``size_divisibility``). The mask reference is ``sigmoid(inverse_sigmoid(ref))`` as in the
  official ``inference()`` (the official evaluation branch skips the round trip; the two differ by ~1e-5 in mask
  logits);
- ``mask_inputs``: what :func:`seqformer.model.mask_head.clip_mask_logits` needs to compute this layer's masks for
  any subset of queries (the criterion computes masks for matched queries only, as the official training does);
- ``aux_outputs``: the same dicts (without ``pred_masks``) for every earlier decoder layer;
- ``pooled_class_map [B, T, K, H/8, W/8]`` (training mode, only with ``pooled_class_loss_coef > 0``, not official):
  per-position class logits of the stride-8 encoder memory for the auxiliary ``loss_pooled_ce``;
- ``query_groups`` G (training mode, only with ``train_query_groups > 1``, not official): then every ``Q`` above is
  ``G * Q``, group by group (:func:`query_group` takes one group apart).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

from seqformer.model.backbone import build_backbone, resize_mask
from seqformer.model.box_ops import inverse_sigmoid
from seqformer.model.config import ModelConfig
from seqformer.model.deformable_transformer import DeformableTransformer, refine_boxes
from seqformer.model.dropout import Dropout
from seqformer.model.mask_head import MaskHeadSmallConv, clip_mask_logits, dynamic_param_layout
from seqformer.model.mlp import MLP
from seqformer.model.shape_head import MaskShapeHead

logger = logging.getLogger(__name__)

SIZE_DIVISIBILITY = 32


class DetectionCore(nn.Module):
    """The official ``detr`` sub-module: transformer, class/box heads, queries, input projections, backbone."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        backbone = build_backbone(
            cfg.backbone,
            hidden_dim=hidden,
            position_embedding=cfg.position_embedding,
            train_backbone=cfg.train_backbone,
            dilation=cfg.dilation,
            frozen_batch_norm=cfg.frozen_batch_norm,
            freeze_stem=cfg.freeze_stem,
            pretrained=cfg.pretrained_backbone,
            input_edges=cfg.input_edges,
            input_rgb=cfg.input_rgb,
        )
        # registration order = official state-dict order: transformer, heads, queries, input_proj, backbone
        self.transformer = DeformableTransformer(cfg)
        class_embed = nn.Linear(hidden, cfg.num_classes)
        bbox_embed = MLP(hidden, hidden, 4, 3)
        self.query_embed = nn.Embedding(cfg.num_queries, hidden * 2)
        self.input_proj = self._build_input_proj(backbone.num_channels, hidden, cfg.num_feature_levels)
        self.backbone = backbone
        self.num_feature_levels = cfg.num_feature_levels
        self.with_box_refine = cfg.with_box_refine
        self.aux_loss = cfg.aux_loss

        # focal prior 0.01 for the class bias; zero last box layer (reference §9)
        class_embed.bias.data = torch.ones(cfg.num_classes) * -math.log((1 - 0.01) / 0.01)
        nn.init.constant_(bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(bbox_embed.layers[-1].bias, 0)
        num_pred = cfg.dec_layers
        if cfg.with_box_refine:
            self.class_embed = nn.ModuleList([copy.deepcopy(class_embed) for _ in range(num_pred)])
            self.bbox_embed = nn.ModuleList([copy.deepcopy(bbox_embed) for _ in range(num_pred)])
            # inherited quirk: only the first layer's copy gets the (w, h) bias -2
            nn.init.constant_(self.bbox_embed[0].layers[-1].bias.data[2:], -2.0)
            self.transformer.decoder.bbox_embed = self.bbox_embed  # registered twice, as officially
        else:
            nn.init.constant_(bbox_embed.layers[-1].bias.data[2:], -2.0)
            self.class_embed = nn.ModuleList([class_embed for _ in range(num_pred)])
            self.bbox_embed = nn.ModuleList([bbox_embed for _ in range(num_pred)])
        # keep the official key order: class_embed and bbox_embed before query_embed
        for name in ("query_embed", "input_proj", "backbone"):
            self._modules[name] = self._modules.pop(name)

    @staticmethod
    def _build_input_proj(in_channels: list[int], hidden: int, num_levels: int) -> nn.ModuleList:
        projs = [nn.Sequential(nn.Conv2d(c, hidden, kernel_size=1), nn.GroupNorm(32, hidden)) for c in in_channels]
        channels = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            projs.append(
                nn.Sequential(nn.Conv2d(channels, hidden, kernel_size=3, stride=2, padding=1), nn.GroupNorm(32, hidden))
            )
            channels = hidden
        for proj in projs:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        return nn.ModuleList(projs[:num_levels])


class SeqFormer(nn.Module):
    """SeqFormer for video instance segmentation (``detr``, ``controller``, ``mask_head``)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.detr = DetectionCore(cfg)
        self.mask_channels = cfg.mask_channels
        weight_nums, bias_nums = dynamic_param_layout(self.mask_channels, cfg.rel_coord)
        self.controller = MLP(cfg.hidden_dim, cfg.hidden_dim, sum(weight_nums) + sum(bias_nums), 3)
        for layer in self.controller.layers:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        fine_channels = self.detr.backbone[0].stride4_channels if cfg.mask_feat_stride == 4 else None
        self.mask_head = MaskHeadSmallConv(cfg.hidden_dim, self.mask_channels, fine_channels)
        for module in self.modules():
            if isinstance(module, Dropout):
                module.fast = cfg.fast_dropout
        if cfg.mask_class_head:  # not official: silhouette classifier (see ModelConfig.mask_class_head)
            self.mask_shape_head = MaskShapeHead(cfg.num_classes)
        if cfg.pooled_class_loss_coef > 0:  # not official: the auxiliary mask-pooled classifier (see ModelConfig)
            self.pooled_class_embed = nn.Linear(cfg.hidden_dim, cfg.num_classes)
        if cfg.train_query_groups > 1:  # not official: Group DETR training queries (see ModelConfig)
            self.extra_query_embed = nn.Embedding((cfg.train_query_groups - 1) * cfg.num_queries, cfg.hidden_dim * 2)

    def load_official_state_dict(
        self, checkpoint: dict[str, Any], *, strict: bool = True, drop_class_head: bool = False
    ):  # noqa: ANN201, E501
        """Load an official checkpoint (whole dict or its ``model`` entry); see
        :func:`seqformer.model.checkpoint.load_official_state_dict`. Returns the :class:`LoadReport`."""
        from seqformer.model.checkpoint import load_official_state_dict

        return load_official_state_dict(self, checkpoint, strict=strict, drop_class_head=drop_class_head)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def prepare_inputs(
        clips: list[torch.Tensor] | torch.Tensor, size_divisibility: int = SIZE_DIVISIBILITY
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pad clips to a common size divisible by ``size_divisibility`` and build the padding mask.

        Args:
            clips: list of ``B`` float tensors ``[T, 3, H_i, W_i]`` (same T) or one ``[B, T, 3, H, W]`` tensor.
            size_divisibility: pad height and width up to a multiple of this (1: no padding beyond the largest clip).

        Returns:
            images ``[B*T, 3, Hp, Wp]`` (clip-major), mask bool ``[B*T, Hp, Wp]`` (True = padding),
            image_sizes int64 ``[B, 2]`` unpadded (h, w) of each clip.
        """
        if isinstance(size_divisibility, bool) or not isinstance(size_divisibility, int) or size_divisibility < 1:
            raise ValueError(f"size_divisibility must be a positive integer, got {size_divisibility!r}")
        if isinstance(clips, torch.Tensor):
            if clips.dim() != 5:
                raise ValueError(f"a clip tensor must be [B, T, 3, H, W], got shape {tuple(clips.shape)}")
            clips = list(clips.unbind(0))
        if not isinstance(clips, (list, tuple)) or len(clips) == 0:
            raise TypeError("clips must be a non-empty list of [T, 3, H, W] tensors or a [B, T, 3, H, W] tensor")
        num_frames = clips[0].shape[0]
        for i, clip in enumerate(clips):
            if not isinstance(clip, torch.Tensor) or clip.dim() != 4 or clip.shape[1] != 3:
                raise ValueError(f"clip {i} must be a [T, 3, H, W] tensor, got {getattr(clip, 'shape', type(clip))}")
            if clip.shape[0] != num_frames:
                raise ValueError(
                    f"all clips of a batch need the same number of frames: clip 0 has {num_frames}, clip {i} has "
                    f"{clip.shape[0]}; batch clips of equal length"
                )
        max_h = max(int(c.shape[-2]) for c in clips)
        max_w = max(int(c.shape[-1]) for c in clips)
        pad_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
        pad_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
        ref = clips[0]
        images = ref.new_zeros((len(clips), num_frames, 3, pad_h, pad_w))
        mask = torch.ones((len(clips), num_frames, pad_h, pad_w), dtype=torch.bool, device=ref.device)
        for i, clip in enumerate(clips):
            h, w = clip.shape[-2:]
            images[i, :, :, :h, :w].copy_(clip)
            mask[i, :, :h, :w] = False
        sizes = torch.tensor(
            [[int(c.shape[-2]), int(c.shape[-1])] for c in clips], dtype=torch.int64, device=ref.device
        )
        return images.flatten(0, 1), mask.flatten(0, 1), sizes

    # ------------------------------------------------------------------ steps
    def extract_features(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list, list, list, torch.Tensor | None]:
        """Backbone, input projections and the extra stride-64 level(s) -> per-level srcs, masks, positions, and
        the backbone's stride-4 map for :meth:`mask_features` (None unless ``mask_feat_stride=4``)."""
        fine = self.cfg.mask_feat_stride == 4
        stride4, feats, masks, poses = self.detr.backbone.forward_with_stride4(images, mask, with_stride4=fine)
        srcs = [self.detr.input_proj[lvl](feat) for lvl, feat in enumerate(feats)]
        masks, poses = list(masks), list(poses)
        for lvl in range(len(feats), self.detr.num_feature_levels):
            # the first extra level reads the raw last backbone stage, not its projection (reference §4)
            src = self.detr.input_proj[lvl](feats[-1] if lvl == len(feats) else srcs[-1])
            lvl_mask = resize_mask(mask, src.shape[-2:])
            srcs.append(src)
            masks.append(lvl_mask)
            poses.append(self.detr.backbone[1](lvl_mask).to(src.dtype))
        return srcs, masks, poses, stride4

    def predict_heads(self, dec: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        """Class logits, boxes and dynamic mask parameters of every decoder layer."""
        layers = []
        for lvl, (hs, hs_box) in enumerate(zip(dec["hs"], dec["hs_box"])):
            if dec["coords"]:
                boxes = dec["coords"][lvl]
            else:
                boxes = refine_boxes(self.detr.bbox_embed[lvl](hs_box), dec["references"][lvl])
            layers.append(
                {
                    "pred_logits": self.detr.class_embed[lvl](hs),
                    "pred_boxes": boxes,
                    "params": self.controller(hs),
                }
            )
        return layers

    def mask_features(
        self, enc: dict[str, Any], batch_size: int, num_frames: int, stride4: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mask feature branch on memory levels s8/s16/s32 of every frame -> ``[B, T, c, h8, w8]``; with
        ``mask_feat_stride=4`` also on the backbone's ``stride4`` map -> ``[B, T, c, h4, w4]``."""
        memory = enc["memory"]  # [B*T, S, C]
        levels, start = [], 0
        for h, w in enc["shapes"][:3]:
            levels.append(memory[:, start : start + h * w].transpose(1, 2).reshape(memory.shape[0], -1, h, w))
            start += h * w
        feats = self.mask_head(levels, stride4)
        return feats.view(batch_size, num_frames, *feats.shape[1:])

    def pooled_class_map(self, enc: dict[str, Any], batch_size: int, num_frames: int) -> torch.Tensor:
        """Class logits of every stride-8 memory position -> ``[B, T, K, h8, w8]`` (auxiliary loss only)."""
        h, w = enc["shapes"][0]
        level0 = enc["memory"][:, : h * w]  # [B*T, h*w, C]
        logits = self.pooled_class_embed(level0).transpose(1, 2)  # [B*T, K, h*w]
        return logits.reshape(batch_size, num_frames, -1, h, w)

    @staticmethod
    def mask_reference(reference: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """Layer input reference ``[B, T, Q, 2|4]`` -> instance positions in pixels of the unpadded image
        ``[B, T, Q, 2]`` (x, y); passes through ``sigmoid(inverse_sigmoid(.))`` as the official code does."""
        scale = image_sizes.flip(-1).to(reference.dtype)  # (w, h)
        return inverse_sigmoid(reference).sigmoid()[..., :2] * scale[:, None, None, :]

    # ------------------------------------------------------------------ forward
    def forward(
        self, clips: list[torch.Tensor] | torch.Tensor, *, size_divisibility: int | None = None
    ) -> dict[str, Any]:
        """Run SeqFormer on a batch of clips (see the module docstring for the outputs).

        Args:
            clips: list of ``B`` float tensors ``[T, 3, H_i, W_i]`` (ImageNet-normalised, same T) or a
                ``[B, T, 3, H, W]`` tensor. Padded bottom/right to a multiple of ``size_divisibility`` with a
                padding mask.
            size_divisibility: overrides ``cfg.size_divisibility`` (default 32, as the official evaluation); 1
                pads nothing beyond the largest clip, as the official ``inference.py``.
        """
        divisor = self.cfg.size_divisibility if size_divisibility is None else size_divisibility
        images, mask, image_sizes = self.prepare_inputs(clips, divisor)
        batch_size = image_sizes.shape[0]
        num_frames = images.shape[0] // batch_size
        srcs, masks, poses, stride4 = self.extract_features(images, mask)
        enc = self.detr.transformer.encode(srcs, masks, poses, batch_size, num_frames)
        query_embed, groups, group_mask = self.detr.query_embed.weight, 1, None
        if self.training and hasattr(self, "extra_query_embed"):
            query_embed = torch.cat([query_embed, self.extra_query_embed.weight], 0)
            groups = self.cfg.train_query_groups
            group = torch.arange(query_embed.shape[0], device=query_embed.device) // self.cfg.num_queries
            group_mask = group[:, None] != group[None, :]  # no attention across groups
        dec = self.detr.transformer.decode(enc, query_embed, batch_size, num_frames, group_mask)
        mask_feats = self.mask_features(enc, batch_size, num_frames, stride4)
        layers = self.predict_heads(dec)
        outputs = []
        for lvl, layer in enumerate(layers):
            outputs.append(
                {
                    "pred_logits": layer["pred_logits"],
                    "pred_boxes": layer["pred_boxes"],
                    "mask_inputs": {
                        "mask_feats": mask_feats,
                        "params": layer["params"],
                        "ref_points": self.mask_reference(dec["references"][lvl], image_sizes),
                        "rel_coord": self.cfg.rel_coord,
                        "out_stride": self.cfg.mask_out_stride,
                        "feat_stride": self.cfg.mask_feat_stride,
                        "image_sizes": image_sizes,
                    },
                }
            )
        out = outputs[-1]
        out["pred_queries"] = dec["hs"][-1]
        if groups > 1:
            out["query_groups"] = groups
        if self.training and hasattr(self, "pooled_class_embed"):
            out["pooled_class_map"] = self.pooled_class_map(enc, batch_size, num_frames)
        if not self.training or hasattr(self, "mask_shape_head"):
            out["pred_masks"] = all_query_masks(out["mask_inputs"])
        if hasattr(self, "mask_shape_head"):
            out["pred_logits"] = out["pred_logits"] + self.mask_shape_head(
                out["pred_masks"], out["pred_boxes"], image_sizes, self.cfg.mask_out_stride
            )
        if self.detr.aux_loss:
            out["aux_outputs"] = outputs[:-1]
        return out


def query_group(outputs: dict[str, Any], group: int, num_queries: int) -> dict[str, Any]:
    """The outputs of one training query group (queries ``[group * num_queries, (group + 1) * num_queries)``), in
    the layout of a one-group model (``aux_outputs`` too); ``pooled_class_map`` stays with group 0 only."""
    part = slice(group * num_queries, (group + 1) * num_queries)
    out: dict[str, Any] = {
        "pred_logits": outputs["pred_logits"][:, part],
        "pred_boxes": outputs["pred_boxes"][:, :, part],
    }
    mask_inputs = dict(outputs["mask_inputs"])
    mask_inputs["params"] = mask_inputs["params"][:, part]
    mask_inputs["ref_points"] = mask_inputs["ref_points"][:, :, part]
    out["mask_inputs"] = mask_inputs
    for key in ("pred_queries", "pred_masks"):
        if key in outputs:
            out[key] = outputs[key][:, part]
    if group == 0 and "pooled_class_map" in outputs:
        out["pooled_class_map"] = outputs["pooled_class_map"]
    if "aux_outputs" in outputs:
        out["aux_outputs"] = [query_group(aux, group, num_queries) for aux in outputs["aux_outputs"]]
    return out


def all_query_masks(mask_inputs: dict[str, Any]) -> torch.Tensor:
    """Mask logits of every query of one layer -> ``[B, Q, T, h4, w4]``."""
    feats = mask_inputs["mask_feats"]
    masks = [
        clip_mask_logits(
            feats[b],
            mask_inputs["params"][b],
            mask_inputs["ref_points"][b],
            rel_coord=mask_inputs["rel_coord"],
            feat_stride=mask_inputs["feat_stride"],
            out_stride=mask_inputs["out_stride"],
        )
        for b in range(feats.shape[0])
    ]
    return torch.stack(masks, 0)


def matched_query_masks(mask_inputs: dict[str, Any], indices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mask logits of the matched queries, clip by clip in matcher order -> ``[sum_b n_b, T, h4, w4]``."""
    feats = mask_inputs["mask_feats"]
    masks = []
    for b, (query_idx, _) in enumerate(indices):
        masks.append(
            clip_mask_logits(
                feats[b],
                mask_inputs["params"][b, query_idx],
                mask_inputs["ref_points"][b][:, query_idx],
                rel_coord=mask_inputs["rel_coord"],
                feat_stride=mask_inputs["feat_stride"],
                out_stride=mask_inputs["out_stride"],
            )
        )
    return torch.cat(masks, 0)


__all__ = ["SeqFormer", "DetectionCore", "all_query_masks", "matched_query_masks", "query_group"]
