"""Model configuration: one frozen dataclass whose defaults are the official R50 YouTube-VIS 2019 SeqFormer.

The platform's pydantic experiment schema embeds :class:`ModelConfig` directly, so field names are the config keys
(``model.hidden_dim``) and equal the constructor argument names; there is no translation layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal

BackboneName = Literal["tiny_resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnext101", "swin_l"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, matcher and loss settings of SeqFormer (defaults: the official R50 YouTube-VIS 2019 model)."""

    backbone: BackboneName = "resnet50"
    """Backbone: torchvision ResNet-50/101, ResNeXt-101 64x4d (frozen BN), or the official Swin-L (window 12)."""
    hidden_dim: int = 256
    """Transformer width C; must be divisible by 32 (GroupNorm groups) and by ``nheads``."""
    dim_feedforward: int = 1024
    """Hidden size of the encoder and decoder feed-forward layers."""
    enc_layers: int = 6
    """Number of deformable encoder layers."""
    dec_layers: int = 6
    """Number of SeqFormer decoder layers (one class/box head per layer)."""
    nheads: int = 8
    """Attention heads of every attention (deformable and multi-head self-attention)."""
    enc_n_points: int = 4
    """Sampling points per head and level in the encoder."""
    dec_n_points: int = 4
    """Sampling points per head and level in the decoder cross-attention."""
    num_queries: int = 300
    """Number of instance queries Q."""
    num_classes: int = 42
    """Number of class logits K (42 for YouTube-VIS 2019/2021 with the raw category ids as indices)."""
    num_frames: int = 5
    """Frames per training clip; the forward accepts any number of frames (inference uses whole videos)."""
    num_feature_levels: int = 4
    """Feature levels fed to the transformer: three backbone stages plus the extra stride-64 level."""
    dropout: float = 0.1
    """Dropout probability in the transformer (also the multi-head attention weights)."""
    with_box_refine: bool = True
    """Iterative box refinement: one box head per decoder layer, each refining the previous layer's boxes."""
    rel_coord: bool = True
    """Feed the relative pixel coordinates of each location to the dynamic mask head (10 input channels)."""
    mask_out_stride: int = 4
    """Stride of the predicted mask logits (the mask features are upsampled by ``mask_feat_stride`` / this)."""
    mask_feat_stride: int = 8
    """Stride of the mask features. 8 is official: the mask branch fuses the stride-8/16/32 encoder memory. 4 is
    *not* part of SeqFormer: the branch also fuses the backbone's stride-4 stage (ResNet ``layer1``) through a
    1x1 projection and one 3x3 convolution (``mask_head.fine_proj``, ``mask_head.fine``), so the dynamic mask head
    runs at stride 4. For small frames, where stride 8 caps the mask IoU (README's demo section has the figures)."""
    aux_loss: bool = True
    """Supervise every decoder layer (auxiliary outputs and losses with suffix ``_{i}``)."""
    position_embedding: Literal["sine", "learned"] = "sine"
    """Position encoding of the feature maps (the official models use ``sine``)."""
    dilation: bool = False
    """Replace the stride of the last ResNet stage by dilation (stride-16 C5); the official models do not."""
    pretrained_backbone: str | None = None
    """Local file with ImageNet backbone weights (torchvision / Swin key names) or None; nothing is downloaded."""
    frozen_batch_norm: bool = True
    """Use FrozenBatchNorm2d in the ResNet backbones (statistics and affine parameters fixed) as officially."""
    train_backbone: bool = True
    """Train ResNet layer2-4 (stem and layer1 stay frozen as officially); False freezes the whole backbone."""
    freeze_stem: bool = True
    """Keep the ResNet stem and layer1 frozen (official); False trains them too (training from random init)."""
    mask_feat_channels: int | None = None
    """Channels of the mask features; None = the official ``hidden_dim // 32`` (8 for hidden size 256)."""
    msda_backend: Literal["auto", "compiled", "reference"] = "auto"
    """Multi-scale deformable attention backend passed to ``seqformer.kernels.ms_deform_attn``."""
    size_divisibility: int = 32
    """Inputs are padded bottom/right to a multiple of this (32: the official training and ``engine.evaluate``;
    1: no padding, as the official ``inference.py``). ``SeqFormer.forward(..., size_divisibility=)`` overrides it."""
    temporal_aggregation: Literal["weighted", "mean"] = "weighted"
    """How the per-frame sampled features become the instance query: ``weighted`` (official: softmax over frames of
    ``time_attention_weights`` of the box queries) or ``mean`` (plain average; the paper's aggregation ablation)."""
    query_decomposition: bool = True
    """Per-frame box queries (official). False: the box queries are averaged over the frames after every decoder
    layer, so one shared query drives every frame (the paper's ablation without query decomposition)."""
    fast_dropout: bool = False
    """Training on CPU: draw the transformer's dropout masks from 16-bit lanes of 64-bit generator words instead
    of ``bernoulli_`` (about 10x faster there; the keep probability is within 2^-17 of ``1 - dropout`` and the
    scale makes the expectation exact; see :mod:`seqformer.model.dropout`). Off: the same draws as ``F.dropout``
    for a seed. Attention-weight dropout inside ``nn.MultiheadAttention`` is unaffected."""
    checkpoint_encoder: bool = False
    """Training only: keep no activations inside the encoder layers but recompute them in the backward
    (``torch.utils.checkpoint``; dropout draws are replayed, so values and gradients are unchanged). Lowers the
    training step's peak memory at the cost of a second encoder forward. Off officially."""
    set_cost_class: float = 2.0
    """Matcher weight of the focal classification cost."""
    set_cost_bbox: float = 5.0
    """Matcher weight of the Euclidean distance between all frames' boxes."""
    set_cost_giou: float = 2.0
    """Matcher weight of the negative frame-averaged GIoU."""
    cls_loss_coef: float = 2.0
    """Weight of ``loss_ce`` (sigmoid focal classification loss)."""
    bbox_loss_coef: float = 5.0
    """Weight of ``loss_bbox`` (L1 on normalised cxcywh boxes)."""
    giou_loss_coef: float = 2.0
    """Weight of ``loss_giou``."""
    mask_loss_coef: float = 2.0
    """Weight of ``loss_mask`` (sigmoid focal loss on the stride-4 mask logits)."""
    dice_loss_coef: float = 5.0
    """Weight of ``loss_dice``."""
    focal_alpha: float = 0.25
    """Alpha of the focal losses (gamma is fixed at 2 as officially)."""
    pooled_class_loss_coef: float = 0.0
    """Weight of ``loss_pooled_ce``, an auxiliary loss that is *not* part of SeqFormer (0, the official setting, adds
    no parameter and no loss). When positive, a linear classifier (``pooled_class_embed``) reads the stride-8
    encoder memory, its logits are averaged over each ground-truth mask in each frame, and cross-entropy against the
    instance's class is added to the loss. It hands the backbone and encoder a direct shape signal at every object,
    which a model trained from random initialisation otherwise receives only through the matched queries' class
    loss (README's demo section has what it did there; the demo does not use it)."""
    mask_class_head: bool = False
    """Not part of SeqFormer (off officially): add the logits of a small CNN that classifies each query's predicted
    mask silhouette inside its predicted box (``mask_shape_head``, see :mod:`seqformer.model.shape_head`) to the
    final layer's class logits. For models trained from random initialisation, whose masks learn long before their
    queries carry shape (README's demo section)."""

    train_query_groups: int = 1
    """Not part of SeqFormer (1 officially): train this many groups of ``num_queries`` queries at once (Group
    DETR). Each group is matched one-to-one on its own and adds its own losses; no attention crosses groups; only
    the first group (``detr.query_embed``) exists at inference, the others are ``extra_query_embed``. More matched
    queries per clip for models trained from random initialisation (README's demo section)."""

    input_edges: bool = False
    """Not part of SeqFormer (off officially): append a fixed, colour-invariant edge channel to the backbone input
    (:func:`seqformer.model.backbone.edge_channel`: Sobel gradient magnitude summed over R, G, B, scaled per frame
    by its maximum) and give the ResNet stem four input channels (one with ``input_rgb=False``). For ResNet-family
    backbones trained from random initialisation on data whose classes differ by shape under random colours and
    textures, where shape is learned from raw RGB only slowly (README's demo section); ImageNet or official weights
    do not fit the stem."""

    input_rgb: bool = True
    """False is not part of SeqFormer (True officially): with ``input_edges``, the stem reads the edge channel
    alone (one input channel) and never the colours. On the demo's data, where colour and texture are drawn
    independently of the class, the colours only slow the learning of shape (README's demo section)."""

    def __post_init__(self) -> None:
        positive = (
            "hidden_dim dim_feedforward enc_layers dec_layers nheads enc_n_points dec_n_points num_queries "
            "num_classes num_frames num_feature_levels mask_out_stride mask_feat_stride size_divisibility"
        ).split()
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.hidden_dim % 32 != 0:
            raise ValueError(f"model.hidden_dim must be a multiple of 32 (GroupNorm(32) groups), got {self.hidden_dim}")
        if self.hidden_dim % self.nheads != 0:
            raise ValueError(f"model.hidden_dim ({self.hidden_dim}) must be divisible by model.nheads ({self.nheads})")
        if self.num_feature_levels not in (3, 4):
            raise ValueError(
                f"model.num_feature_levels must be 3 or 4 (the backbone's stride-8/16/32 stages, which the mask "
                f"branch reads, plus the optional stride-64 level), got {self.num_feature_levels}"
            )
        if self.mask_feat_stride not in (4, 8):
            raise ValueError(f"model.mask_feat_stride must be 8 (official) or 4, got {self.mask_feat_stride!r}")
        if self.mask_feat_stride % self.mask_out_stride != 0:
            raise ValueError(
                f"model.mask_out_stride must divide model.mask_feat_stride ({self.mask_feat_stride}), got "
                f"{self.mask_out_stride}"
            )
        if self.input_edges and (self.backbone == "swin_l" or self.pretrained_backbone is not None):
            raise ValueError(
                "model.input_edges gives the ResNet stem a fourth input channel, so it needs a ResNet-family backbone "
                "trained from random initialisation: set model.pretrained_backbone=null and a ResNet backbone, or "
                "model.input_edges=false"
            )
        if not self.input_rgb and not self.input_edges:
            raise ValueError(
                "model.input_rgb=false leaves the backbone no input: it needs model.input_edges=true (the stem then "
                "reads the edge channel alone), or set model.input_rgb=true"
            )
        if self.mask_feat_stride == 4 and self.backbone == "swin_l":
            raise ValueError("model.mask_feat_stride=4 needs a ResNet backbone; use 8 with model.backbone=swin_l")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.train_query_groups, bool) or not (
            isinstance(self.train_query_groups, int) and self.train_query_groups >= 1
        ):
            raise ValueError(f"model.train_query_groups must be an integer >= 1, got {self.train_query_groups!r}")
        if isinstance(self.pooled_class_loss_coef, bool) or not self.pooled_class_loss_coef >= 0.0:
            raise ValueError(f"model.pooled_class_loss_coef must be >= 0, got {self.pooled_class_loss_coef!r}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"model.focal_alpha must be in [0, 1], got {self.focal_alpha}")
        if self.mask_feat_channels is not None and (
            isinstance(self.mask_feat_channels, bool) or self.mask_feat_channels < 1
        ):
            raise ValueError(
                f"model.mask_feat_channels must be a positive integer or None, got {self.mask_feat_channels}"
            )
        if self.hidden_dim // 32 < 1 and self.mask_feat_channels is None:
            raise ValueError("model.mask_feat_channels must be set when model.hidden_dim < 32")
        choices = {
            "backbone": ("tiny_resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnext101", "swin_l"),
            "position_embedding": ("sine", "learned"),
            "msda_backend": ("auto", "compiled", "reference"),
            "temporal_aggregation": ("weighted", "mean"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.dilation and self.backbone == "swin_l":
            raise ValueError(
                "model.dilation applies to ResNet backbones only; set it to false for model.backbone=swin_l"
            )
        for name in ("set_cost_class", "set_cost_bbox", "set_cost_giou"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.set_cost_class == 0 and self.set_cost_bbox == 0 and self.set_cost_giou == 0:
            raise ValueError("model.set_cost_class, set_cost_bbox and set_cost_giou cannot all be 0")

    @property
    def mask_channels(self) -> int:
        """Channels of the mask features (``mask_feat_channels`` or the official ``hidden_dim // 32``)."""
        return self.mask_feat_channels if self.mask_feat_channels is not None else self.hidden_dim // 32

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (config keys equal field names)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**data)
