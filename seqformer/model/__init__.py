"""SeqFormer in plain PyTorch: configuration, model, matcher, criterion, post-processing, checkpoint import."""

from seqformer.model.build import build_model
from seqformer.model.config import ModelConfig

__all__ = ["ModelConfig", "build_model"]
