"""Resolve a model spec to a ready model: registry URI, checkpoint (ours or official), or experiment YAML."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqformer.model import ModelConfig, build_model
from seqformer.platform.checkpoint import FORMAT, CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


def experiment_model_dir(cfg: Any) -> Path:
    """Where ``seqformer train`` leaves the final (best) checkpoint of an experiment."""
    return Path(cfg.output_dir) / cfg.name / "model"


def _official_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """A ModelConfig for an official checkpoint: official defaults, classes and backbone read from the weights."""
    num_classes = int(state["detr.class_embed.0.bias"].shape[0]) if "detr.class_embed.0.bias" in state else 42
    backbone = "resnet50"
    if any(k.startswith("detr.backbone.0.body.layers.") for k in state):
        backbone = "swin_l"
    elif "detr.backbone.0.body.layer3.22.conv1.weight" in state:
        width = state["detr.backbone.0.body.layer1.0.conv1.weight"].shape[0]
        backbone = "resnext101" if width > 64 else "resnet101"
    return ModelConfig(backbone=backbone, num_classes=num_classes)


def model_from_payload(
    payload: dict[str, Any], source: str, device: str = "cpu"
) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model a checkpoint payload describes and load its weights strictly."""
    if payload.get("format") == FORMAT:
        cfg = ModelConfig.from_dict(payload["model_config"])
        model = build_model(cfg)
        try:
            model.load_state_dict(payload["model"], strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{source}: weights do not fit the model config stored with them: {err}") from None
    else:
        state = payload["model"] if isinstance(payload.get("model"), dict) else payload
        cfg = _official_config(state)
        model = build_model(cfg)
        model.load_official_state_dict(state)
    return model.to(device).eval(), cfg


def resolve_checkpoint_payload(spec: str | Path) -> dict[str, Any]:
    """Load the checkpoint dict a spec names: ``models:/...`` from the registry, or a checkpoint folder / file."""
    text = str(spec)
    if text.startswith("models:/"):
        from seqformer.platform.tracking import Tracker, resolve_tracking_uri

        tracker = Tracker(resolve_tracking_uri(None))
        with tempfile.TemporaryDirectory(prefix="seqformer-model-") as tmp:
            return load_checkpoint(tracker.download_model_checkpoint(text, tmp))
    if not Path(text).exists():
        raise FileNotFoundError(f"checkpoint not found: {text} (expected models:/name@alias or a checkpoint path)")
    return load_checkpoint(text)


def load_model(spec: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelConfig]:
    """Load a model for evaluation / inference.

    Args:
        spec: ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` (MLflow registry at the configured tracking
            URI), a checkpoint folder or file (ours, or an official ``.pth``), or an experiment YAML (its trained model,
            else its ``train.init_checkpoint``).
        device: device to put the model on.

    Returns:
        ``(model in eval mode, its ModelConfig)``.
    """
    path = Path(str(spec))
    if path.suffix in (".yaml", ".yml"):
        from seqformer.platform.config import load_experiment

        cfg = load_experiment(path)
        trained = experiment_model_dir(cfg)
        if (trained / "checkpoint.pt").is_file():
            return model_from_payload(load_checkpoint(trained), str(trained), device)
        if cfg.train.init_checkpoint:
            return load_model(cfg.train.init_checkpoint, device)
        raise FileNotFoundError(
            f"{path}: experiment has no trained model at {trained} and no train.init_checkpoint; train it first "
            f"(seqformer train {path}) or pass a checkpoint file"
        )
    return model_from_payload(resolve_checkpoint_payload(spec), str(spec), device)
