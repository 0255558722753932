"""Official SeqFormer checkpoint import: strict loading with a report by key name, and file conversion.

Official model-zoo files are ``{'model', 'optimizer', 'lr_scheduler', 'epoch', 'args'}``. Our module tree equals the
official one, so the ``model`` dict loads as is after dropping ``num_batches_tracked`` and a DDP ``module.`` prefix.
Files are read with ``torch.load(weights_only=True)``; the only non-tensor classes official files hold
(``argparse.Namespace`` in ``args``, ``collections.Counter`` in the scheduler state) are allow-listed for that load.
"""

from __future__ import annotations

import argparse
import collections
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

CLASS_HEAD_KEY = "detr.class_embed"


@dataclass
class LoadReport:
    """What a load found: keys missing from the file, unexpected in it, with other shapes, and dropped on purpose."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def ok(self) -> bool:
        """True when every model key was loaded with its shape and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        """Human-readable listing (at most ``limit`` names per kind)."""
        parts = [f"loaded {self.loaded} tensors"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {self.missing[:limit]}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {self.unexpected[:limit]}")
        if self.mismatched:
            shown = [f"{k} (file {tuple(a)} vs model {tuple(b)})" for k, a, b in self.mismatched[:limit]]
            parts.append(f"{len(self.mismatched)} with other shapes: {shown}")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped on request")
        return "; ".join(parts)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file with ``weights_only=True`` (allow-listing the classes official files contain)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; pass the path of an official .pth file")
    with torch.serialization.safe_globals([argparse.Namespace, collections.Counter]):
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError / RuntimeError subclasses for unsafe content
            raise ValueError(
                f"checkpoint {str(path)!r} could not be read with weights_only=True ({type(err).__name__}: {err}); "
                "re-save it with only tensors (e.g. torch.save({'model': sd}, path))"
            ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def extract_model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model state of a checkpoint: its ``model`` entry if present, without DDP prefix or BN counters."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint.get("model"), dict) else checkpoint
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint entry {key!r} is a {type(value).__name__}, expected a tensor")
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.endswith("num_batches_tracked"):
            continue
        out[key] = value
    return out


def compare_state(
    model: nn.Module, state: dict[str, torch.Tensor], drop_class_head: bool = False
) -> tuple[LoadReport, dict]:
    """Compare ``state`` with the model's keys and shapes -> report and the loadable subset."""
    own = model.state_dict()
    report = LoadReport()
    if drop_class_head:
        report.dropped = [k for k in state if CLASS_HEAD_KEY in k]
        state = {k: v for k, v in state.items() if CLASS_HEAD_KEY not in k}
    report.missing = [k for k in own if k not in state and not (drop_class_head and CLASS_HEAD_KEY in k)]
    report.unexpected = [k for k in state if k not in own]
    loadable = {}
    for key, value in state.items():
        if key not in own:
            continue
        if tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            loadable[key] = value
    report.loaded = len(loadable)
    return report, loadable


def load_official_state_dict(
    model: nn.Module, checkpoint: dict[str, Any], *, strict: bool = True, drop_class_head: bool = False
) -> LoadReport:
    """Load an official checkpoint (whole dict or its ``model`` entry) into ``model``.

    Args:
        checkpoint: the official ``torch.load`` result or its ``model`` dict.
        strict: refuse (ValueError, nothing loaded) when any key is missing, unexpected or mis-shaped; with
            ``strict=False`` the matching keys load and the report lists the rest.
        drop_class_head: drop ``detr.class_embed*`` first (as the official pretrain loading does, e.g. COCO
            weights with 91 classes); those keys then keep their fresh initialisation.

    Returns:
        :class:`LoadReport`.
    """
    report, loadable = compare_state(model, extract_model_state(checkpoint), drop_class_head)
    if strict and not report.ok:
        raise ValueError(
            f"checkpoint does not match the model ({report.summary()}); check the ModelConfig (backbone, num_classes, "
            "num_queries, layer counts) or pass strict=False to load the matching part"
        )
    model.load_state_dict(loadable, strict=False)
    if not report.ok:
        logger.warning("partial checkpoint load: %s", report.summary())
    return report


def infer_config_fields(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Guess ModelConfig fields from an official state dict's shapes (heads assumed 8 as in every official model)."""
    keys = state.keys()
    fields: dict[str, Any] = {}
    if "detr.transformer.level_embed" in state:
        levels, hidden = state["detr.transformer.level_embed"].shape
        fields.update(hidden_dim=int(hidden), num_feature_levels=int(levels))
    if "detr.query_embed.weight" in state:
        fields["num_queries"] = int(state["detr.query_embed.weight"].shape[0])
    if "detr.class_embed.0.weight" in state:
        fields["num_classes"] = int(state["detr.class_embed.0.weight"].shape[0])
    fields["enc_layers"] = len({k.split(".")[4] for k in keys if k.startswith("detr.transformer.encoder.layers.")})
    fields["dec_layers"] = len({k.split(".")[4] for k in keys if k.startswith("detr.transformer.decoder.layers.")})
    ffn = state.get("detr.transformer.encoder.layers.0.linear1.weight")
    if ffn is not None:
        fields["dim_feedforward"] = int(ffn.shape[0])
    heads = 8
    levels = fields.get("num_feature_levels", 4)
    for prefix, name in (
        ("encoder.layers.0.self_attn", "enc_n_points"),
        ("decoder.layers.0.cross_attn", "dec_n_points"),
    ):
        w = state.get(f"detr.transformer.{prefix}.attention_weights.weight")
        if w is not None:
            fields[name] = int(w.shape[0]) // (heads * levels)
    if any(".patch_embed." in k for k in keys):
        fields["backbone"] = "swin_l"
    elif "detr.backbone.0.body.layer3.22.conv1.weight" in state:
        conv2 = state.get("detr.backbone.0.body.layer1.0.conv2.weight")
        grouped = conv2 is not None and conv2.shape[1] != conv2.shape[0]
        fields["backbone"] = "resnext101" if grouped else "resnet101"
    else:
        fields["backbone"] = "resnet50"
    lay2 = state.get("mask_head.lay2.weight")
    if lay2 is not None and "hidden_dim" in fields and int(lay2.shape[0]) != fields["hidden_dim"] // 32:
        fields["mask_feat_channels"] = int(lay2.shape[0])
    return fields


def convert_official_checkpoint(
    src: str | Path, dst: str | Path, *, cfg: Any = None, strict: bool = True
) -> LoadReport:
    """Convert an official ``.pth`` into our checkpoint ``{"model", "model_config"}`` (tensors and plain values only).

    The weights are loaded into a freshly built model (config inferred from the shapes unless ``cfg`` is given), so
    a file that does not fit fails here, with the report, instead of at training or inference time.
    """
    from seqformer.model.build import build_model
    from seqformer.model.config import ModelConfig

    state = extract_model_state(read_checkpoint(src))
    if cfg is None:
        cfg = ModelConfig.from_dict(infer_config_fields(state))
    model = build_model(cfg)
    report = load_official_state_dict(model, state, strict=strict)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "source": str(src)}, dst)
    logger.info("converted %s -> %s: %s", src, dst, report.summary())
    return report
