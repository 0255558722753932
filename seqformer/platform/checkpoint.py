"""Our checkpoint format: written atomically with a SHA-256 checksum, verified on load, loaded with weights_only.

A checkpoint is a folder (what Ray Train persists) holding ``checkpoint.pt`` and ``checkpoint.sha256``. The ``.pt``
file is a ``torch.save`` dict with only tensors and plain containers, so ``torch.load(weights_only=True)`` reads it:

``format`` ("seqformer-platform/1"), ``model`` (state dict), ``model_config`` (ModelConfig fields), ``experiment``
(resolved experiment config), ``step``, ``epoch``, and for training state ``optimizer``, ``lr_scheduler``, ``rng``,
``metrics``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

FORMAT = "seqformer-platform/1"
CHECKPOINT_FILE = "checkpoint.pt"
CHECKSUM_FILE = "checkpoint.sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted, wrong format or unsafe."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``folder/checkpoint.pt`` atomically, then its checksum file.

    The checksum is written last: a folder without a matching checksum is never treated as complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **payload}
    target = folder / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".checkpoint.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _atomic_write_bytes(folder / CHECKSUM_FILE, f"{digest}  {CHECKPOINT_FILE}\n".encode())
    return target


def verify_checkpoint(folder: str | Path) -> Path:
    """Return the checkpoint file after checking it exists and matches its checksum.

    Raises:
        CheckpointError: missing file or checksum, or checksum mismatch (truncated / corrupted).
    """
    folder = Path(folder)
    target = folder / CHECKPOINT_FILE
    checksum = folder / CHECKSUM_FILE
    if not target.is_file():
        raise CheckpointError(f"checkpoint {folder}: {CHECKPOINT_FILE} is missing (incomplete save?)")
    if not checksum.is_file():
        raise CheckpointError(f"checkpoint {folder}: {CHECKSUM_FILE} is missing (the save did not finish)")
    expected = checksum.read_text().split()[0] if checksum.read_text().strip() else ""
    actual = sha256_file(target)
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {target}: SHA-256 {actual[:12]}… does not match {CHECKSUM_FILE} ({expected[:12]}…); "
            "the file is truncated or corrupted"
        )
    return target


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and say what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        # official SeqFormer checkpoints also hold their argparse namespace and a Counter: plain data, allowed here
        with torch.serialization.safe_globals([argparse.Namespace, collections.Counter]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled Python objects beyond tensors and plain "
                f"containers ({text}). Only load checkpoints you trust; re-save the state dict alone with "
                "torch.save({'model': model.state_dict()}, path)."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {text})") from None


def load_checkpoint(folder_or_file: str | Path) -> dict[str, Any]:
    """Load one of our checkpoints (folder with checksum, or a bare ``.pt`` file) after verifying it."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = verify_checkpoint(path)
    data = safe_torch_load(path)
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict, got {type(data).__name__}")
    return data


def latest_verified(folders: list[Path]) -> Path | None:
    """The newest checkpoint folder that verifies, warning about every bad one skipped (naming it and the one used).

    Args:
        folders: candidate checkpoint folders, oldest first.
    """
    bad: Path | None = None
    for folder in reversed(folders):
        try:
            verify_checkpoint(folder)
        except CheckpointError as err:
            logger.warning("skipping bad checkpoint %s: %s", folder, err)
            bad = bad or folder
            continue
        if bad is not None:
            logger.warning("checkpoint %s is unusable; using the previous good one %s", bad, folder)
        return folder
    return None
