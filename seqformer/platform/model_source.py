"""Resolve a model spec to a ready model: registry URI, checkpoint (ours or official), or experiment YAML."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from seqformer.model import ModelConfig, build_model
from seqformer.platform.checkpoint import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


def experiment_model_dir(cfg: Any) -> Path:
    """Where ``seqformer train`` leaves the final (best) checkpoint of an experiment."""
    return Path(cfg.output_dir) / cfg.name / "model"


def model_from_payload(
    payload: dict[str, Any], source: str, device: str = "cpu"
) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model a checkpoint payload describes and load its weights strictly.

    Ours (and ``seqformer convert-checkpoint`` output) carry ``model_config``; an official checkpoint does not, and its
    config is read from the weights' shapes.
    """
    from seqformer.model.checkpoint import extract_model_state, infer_config_fields

    if isinstance(payload.get("model_config"), dict):
        cfg = ModelConfig.from_dict(payload["model_config"])
        model = build_model(cfg)
        try:
            model.load_state_dict(payload["model"], strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{source}: weights do not fit the model config stored with them: {err}") from None
    else:
        state = extract_model_state(payload)
        try:
            cfg = ModelConfig.from_dict(infer_config_fields(state))
        except ValueError as err:  # weights that do not describe a SeqFormer (wrong keys or shapes)
            raise CheckpointError(
                f"{source}: not a SeqFormer checkpoint: no model config can be read from its weights ({err})"
            ) from None
        model = build_model(cfg)
        try:
            model.load_official_state_dict(state)
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}") from None
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
