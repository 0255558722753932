"""SeqFormer in plain PyTorch: configuration, model, matcher, criterion, post-processing, checkpoint import.

Public API::

    cfg = ModelConfig()                      # the official R50 YouTube-VIS 2019 model
    model = build_model(cfg).eval()
    model.load_official_state_dict(sd)       # official checkpoint (whole dict or its "model" entry)
    out = model(clips)                       # list of [T, 3, H_i, W_i] or [B, T, 3, H, W]
    losses = build_criterion(cfg)(out, targets)
    results = postprocess_video(out, 0, input_size=(H, W), orig_size=(h, w))
"""

from seqformer.model.build import build_criterion, build_matcher, build_model, param_groups
from seqformer.model.checkpoint import LoadReport, convert_official_checkpoint, load_official_state_dict
from seqformer.model.config import ModelConfig
from seqformer.model.criterion import VideoSetCriterion
from seqformer.model.matcher import VideoHungarianMatcher
from seqformer.model.postprocess import postprocess_video
from seqformer.model.seqformer import SeqFormer

__all__ = [
    "LoadReport",
    "ModelConfig",
    "SeqFormer",
    "VideoHungarianMatcher",
    "VideoSetCriterion",
    "build_criterion",
    "build_matcher",
    "build_model",
    "convert_official_checkpoint",
    "load_official_state_dict",
    "param_groups",
    "postprocess_video",
]
