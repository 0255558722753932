"""Bad experiment YAML (`seqformer run`) and bad checkpoints (`seqformer infer --model`, training resume)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from seqformer.platform.checkpoint import CHECKPOINT_FILE, CHECKSUM_FILE, save_checkpoint
from tests.reliability.corpus import Case, Corpus, cli, scrub

Check = Callable[[Corpus, Path, Callable[[str], None]], None]


def _bomb(levels: int = 10) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _run_refuses(text: str, message: str, max_seconds: float = 10.0) -> Check:
    """`seqformer run` refuses the experiment before anything starts: exit 2 naming the file and the key."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        path = tmp / "experiment.yaml"
        path.write_text(text)
        before = set(tmp.iterdir())
        started = time.monotonic()
        code, _, err = cli("run", str(path))
        seconds = time.monotonic() - started
        note(f"exit {code} in {seconds:.2f} s: {scrub(err, tmp)}")
        assert code == 2
        assert str(path) in err and re.search(message, err), err
        assert seconds < max_seconds
        assert set(tmp.iterdir()) == before  # no data, Ray results or MLflow files were created

    return check


def _infer_refuses(damage: Callable[[Corpus, Path], Path], message: str, marker: str | None = None) -> Check:
    """`seqformer infer --model X` refuses the checkpoint: exit 2 with a message naming it; no video processed."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        model = damage(corpus, tmp)
        code, _, err = corpus.infer(model, corpus.one_video, tmp / "out")
        note(f"exit {code}: {scrub(err, tmp)}")
        assert code == 2
        assert re.search(message, err), err
        assert not (tmp / "out" / "videos").exists()
        if marker is not None:
            assert not (tmp / marker).exists(), "the pickle's code ran"

    return check


def _truncated(corpus: Corpus, tmp: Path) -> Path:
    folder = corpus.checkpoint_copy(tmp)
    target = folder / CHECKPOINT_FILE
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    return folder


def _flipped_byte(corpus: Corpus, tmp: Path) -> Path:
    folder = corpus.checkpoint_copy(tmp)
    data = bytearray((folder / CHECKPOINT_FILE).read_bytes())
    data[len(data) // 3] ^= 0x55
    (folder / CHECKPOINT_FILE).write_bytes(bytes(data))
    return folder


def _no_checksum(corpus: Corpus, tmp: Path) -> Path:
    folder = corpus.checkpoint_copy(tmp)
    (folder / CHECKSUM_FILE).unlink()
    return folder


def _resaved(corpus: Corpus, tmp: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """Our checkpoint re-saved (valid checksum) after editing its state dict."""
    payload = torch.load(corpus.checkpoint / CHECKPOINT_FILE, weights_only=True)
    edit(payload["model"])
    payload.pop("format")
    save_checkpoint(tmp / "edited", payload)
    return tmp / "edited"


def _wrong_keys(corpus: Corpus, tmp: Path) -> Path:
    def edit(state: dict[str, torch.Tensor]) -> None:
        key = next(k for k in state if k.endswith("class_embed.0.weight") or "class_embed" in k)
        state["renamed." + key] = state.pop(key)

    return _resaved(corpus, tmp, edit)


def _wrong_shapes(corpus: Corpus, tmp: Path) -> Path:
    def edit(state: dict[str, torch.Tensor]) -> None:
        key = next(k for k in state if "class_embed" in k and k.endswith("weight"))
        state[key] = torch.zeros(state[key].shape[0] + 3, state[key].shape[1])

    return _resaved(corpus, tmp, edit)


def _official_wrong_keys(corpus: Corpus, tmp: Path) -> Path:
    path = tmp / "official.pth"
    torch.save({"model": {"detr.not_a_layer.weight": torch.zeros(2, 2)}}, path)
    return path


class _RunsCode:
    """Unpickling this runs ``os.system`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(corpus: Corpus, tmp: Path) -> Path:
    path = tmp / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _RunsCode(tmp / "pwned")}, path)
    return path


def _not_a_checkpoint(corpus: Corpus, tmp: Path) -> Path:
    path = tmp / "notes.pth"
    path.write_text("these are not weights")
    return path


def _resume_skips_corrupted(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
    """The driver's resume picks the newest checkpoint that verifies and names the bad one and the one used."""
    import pytest

    from seqformer.platform.config import validate
    from seqformer.platform.driver import latest_good_checkpoint

    exp = validate({"name": "resume_case", "resources": {"storage_path": str(tmp / "storage")}})
    folders = []
    for step in (2, 4, 6):
        folder = tmp / "storage" / "resume_case" / f"checkpoint_{step:06d}"
        save_checkpoint(folder, {"model": {"w": torch.full((2,), float(step))}, "step": step})
        os.utime(folder, (1000.0 + step, 1000.0 + step))  # creation order, as Ray writes them
        folders.append(folder)
    target = folders[-1] / CHECKPOINT_FILE
    target.write_bytes(target.read_bytes()[:100])  # the newest is torn
    caplog = logging.getLogger("seqformer.platform.checkpoint")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    caplog.addHandler(handler)
    try:
        chosen = latest_good_checkpoint(exp)
    finally:
        caplog.removeHandler(handler)
    warning = next((r.getMessage() for r in records if "previous good one" in r.getMessage()), "")
    note(f"resumes from {chosen.name if chosen else None}; warning: {scrub(warning, tmp)}")
    assert chosen == folders[1]
    assert folders[2].name in warning and folders[1].name in warning
    if chosen is None:
        pytest.fail("no checkpoint chosen")


CASES = [
    Case(
        "experiment/unknown-key",
        "`train: {lr_backbon: 1.0e-5}` (`seqformer run`)",
        "exit 2 in < 10 s naming the file and 'train.lr_backbon', with 'did you mean train.lr_backbone'; nothing "
        "created",
        _run_refuses("train:\n  lr_backbon: 1.0e-5\n", r"did you mean 'train\.lr_backbone'"),
    ),
    Case(
        "experiment/wrong-type",
        "`train: {epochs: many}`",
        "exit 2 naming 'train.epochs' and the value",
        _run_refuses("train:\n  epochs: many\n", r"train\.epochs.*got 'many'"),
    ),
    Case(
        "experiment/negative-lr",
        "`train: {lr: -0.001}`",
        "exit 2: 'train.lr': greater than 0",
        _run_refuses("train:\n  lr: -0.001\n", r"train\.lr': Input should be greater than 0"),
    ),
    Case(
        "experiment/zero-workers",
        "`resources: {num_workers: 0}`",
        "exit 2: 'resources.num_workers' >= 1",
        _run_refuses("resources:\n  num_workers: 0\n", r"resources\.num_workers': Input should be greater than"),
    ),
    Case(
        "experiment/nan-lr",
        "`train: {lr: .nan}`",
        "exit 2 naming 'train.lr'",
        _run_refuses("train:\n  lr: .nan\n", r"train\.lr"),
    ),
    Case(
        "experiment/infinite-lr",
        "`train: {lr: .inf}`",
        "exit 2 naming 'train.lr' (an infinite rate is absurd)",
        _run_refuses("train:\n  lr: .inf\n", r"train\.lr"),
    ),
    Case(
        "experiment/yaml-bomb",
        "10 levels of 10 aliases each (10^10 nodes once expanded)",
        "exit 2 in < 10 s: 'expands to ... YAML nodes ... a YAML bomb?'; never expanded",
        _run_refuses(_bomb(), r"(YAML bomb|alias references)"),
    ),
    Case(
        "experiment/python-tag",
        "`name: !!python/object/apply:os.system [...]`",
        "exit 2: safe YAML refuses the tag; nothing runs",
        _run_refuses("name: !!python/object/apply:os.system ['touch pwned']\n", r"could not determine a constructor"),
    ),
    Case(
        "experiment/not-a-mapping",
        "a YAML file holding a list",
        "exit 2 saying a mapping was expected",
        _run_refuses("- train\n- lr\n", r"(mapping|dict|object)"),
    ),
    Case(
        "checkpoint/truncated",
        "our checkpoint folder with `checkpoint.pt` cut in half (`seqformer infer --model`)",
        "exit 2: SHA-256 does not match, 'truncated or corrupted'",
        _infer_refuses(_truncated, r"does not match checkpoint\.sha256.*truncated or corrupted"),
    ),
    Case(
        "checkpoint/flipped-byte",
        "our checkpoint with one byte changed",
        "exit 2: 'truncated or corrupted'",
        _infer_refuses(_flipped_byte, r"truncated or corrupted"),
    ),
    Case(
        "checkpoint/no-checksum",
        "our checkpoint folder without `checkpoint.sha256` (save interrupted)",
        "exit 2: 'the save did not finish'",
        _infer_refuses(_no_checksum, r"the save did not finish"),
    ),
    Case(
        "checkpoint/wrong-keys",
        "our checkpoint (valid checksum) with a renamed state-dict key",
        "exit 2: 'weights do not fit the model config' naming the keys",
        _infer_refuses(_wrong_keys, r"(?s)weights do not fit the model config.*(Missing|Unexpected) key"),
    ),
    Case(
        "checkpoint/wrong-shapes",
        "our checkpoint (valid checksum) with a class head of the wrong shape",
        "exit 2: 'weights do not fit' naming the size mismatch",
        _infer_refuses(_wrong_shapes, r"(?s)weights do not fit the model config.*size mismatch"),
    ),
    Case(
        "checkpoint/official-wrong-keys",
        "a bare `.pth` (official layout) with unknown keys",
        "exit 2 naming the file: not a SeqFormer checkpoint (no config can be read from its weights)",
        _infer_refuses(_official_wrong_keys, r"official\.pth: not a SeqFormer checkpoint"),
    ),
    Case(
        "checkpoint/pickle-runs-code",
        "a `.pth` whose pickle calls `os.system` when loaded",
        "exit 2: 'refused to load' (weights_only); the code never runs",
        _infer_refuses(_evil_pickle, r"refused to load", marker="pwned"),
    ),
    Case(
        "checkpoint/not-a-checkpoint",
        "a text file named `.pth`",
        "exit 2: 'not a readable PyTorch checkpoint'",
        _infer_refuses(_not_a_checkpoint, r"not a readable PyTorch checkpoint"),
    ),
    Case(
        "checkpoint/newest-torn-on-resume",
        "three training checkpoints, the newest cut to 100 bytes (job restart)",
        "resume uses the previous good one; a warning names both",
        _resume_skips_corrupted,
    ),
]
