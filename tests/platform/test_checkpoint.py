"""Checkpoints: atomic writes with checksums, corruption detection, fallback to the previous good one, safe loading."""

from __future__ import annotations

import logging
import os
import pickle

import pytest
import torch

from seqformer.platform.checkpoint import (
    CHECKPOINT_FILE,
    CHECKSUM_FILE,
    CheckpointError,
    latest_verified,
    load_checkpoint,
    safe_torch_load,
    save_checkpoint,
    verify_checkpoint,
)


def _payload(step: int) -> dict:
    return {"model": {"w": torch.full((3,), float(step))}, "step": step}


def test_round_trip_and_checksum(tmp_path):
    save_checkpoint(tmp_path / "c1", _payload(7))
    assert (tmp_path / "c1" / CHECKSUM_FILE).is_file()
    data = load_checkpoint(tmp_path / "c1")
    assert data["step"] == 7 and torch.equal(data["model"]["w"], torch.full((3,), 7.0))
    assert data["format"] == "seqformer-platform/1"
    assert not [p for p in (tmp_path / "c1").iterdir() if p.name.endswith(".tmp")]


def test_truncated_checkpoint_is_detected(tmp_path):
    save_checkpoint(tmp_path / "c", _payload(1))
    target = tmp_path / "c" / CHECKPOINT_FILE
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"does not match checkpoint\.sha256.*truncated or corrupted"):
        verify_checkpoint(tmp_path / "c")


def test_flipped_byte_is_detected(tmp_path):
    save_checkpoint(tmp_path / "c", _payload(1))
    target = tmp_path / "c" / CHECKPOINT_FILE
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "c")


def test_missing_checksum_means_incomplete(tmp_path):
    save_checkpoint(tmp_path / "c", _payload(1))
    (tmp_path / "c" / CHECKSUM_FILE).unlink()
    with pytest.raises(CheckpointError, match="the save did not finish"):
        verify_checkpoint(tmp_path / "c")


def test_latest_good_skips_corrupted_with_warning_naming_both(tmp_path, caplog):
    folders = []
    for step in (1, 2, 3):
        save_checkpoint(tmp_path / f"c{step}", _payload(step))
        folders.append(tmp_path / f"c{step}")
    (tmp_path / "c3" / CHECKPOINT_FILE).write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        folder = latest_verified(folders)
    assert folder == tmp_path / "c2" and load_checkpoint(folder)["step"] == 2
    assert any("c3" in r.message and "c2" in r.message for r in caplog.records)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    with pytest.raises(CheckpointError):
        safe_torch_load(path)
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        safe_torch_load(path)


def test_checkpoint_without_model_key(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        load_checkpoint(path)
