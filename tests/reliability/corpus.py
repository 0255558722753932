"""The bad-input corpus: every case is generated here (nothing downloaded) and run through a real entry point.

A :class:`Case` names its input, the documented outcome, and a check that builds the input under a temporary folder,
runs the command line (``seqformer.platform.cli.main``) or the library call a user would, asserts the documented
outcome and returns what it observed (the message, the skip reason) for ``docs/reliability.md``. Inputs that several
cases share (a tiny synthetic dataset, a tiny model checkpoint, one ``seqformer infer`` run over a folder of broken
videos) are built once per session by :class:`Corpus`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from seqformer.platform.cli import main


@dataclass(frozen=True)
class Case:
    """One bad input and its documented outcome.

    Attributes:
        id: stable identifier (``area/what``), also the row key of the reliability table.
        given: the input, in words.
        expected: the documented outcome, in words.
        check: ``check(corpus, tmp, note)`` builds the input, runs it, calls ``note(observed)`` with what happened
            (before asserting, so a known bug's observed behaviour is recorded too) and asserts ``expected``.
        bug: when set, the case currently fails for the reason given (a known bug, tracked in the final report);
            the test is a strict xfail so a fix makes it fail until the mark is removed.
    """

    id: str
    given: str
    expected: str
    check: Callable[[Corpus, Path, Callable[[str], None]], None]
    bug: str | None = None


def scrub(text: str, *roots: Path) -> str:
    """A message on one line with temporary paths replaced by ``<tmp>`` (stable text for the table)."""
    line = " ".join(text.split())
    for root in roots:
        line = line.replace(str(root), "<tmp>")
    line = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s']+", "<tmp>", line)
    return line[:220]


def cli(*args: str) -> tuple[int, str, str]:
    """Run ``seqformer ARGS`` in this process; returns ``(exit code, stdout, stderr)``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def frames(count: int, seed: int = 0, height: int = 40, width: int = 48) -> list[Any]:
    """Small RGB uint8 frames of a moving square on noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    result = []
    for t in range(count):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        frame[6 + t : 20 + t, 4 + 2 * t : 18 + 2 * t] = (230, 40, 40)
        result.append(frame)
    return result


def write_frame_folder(folder: Path, count: int, suffix: str = ".jpg", seed: int = 0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames(count, seed)):
        Image.fromarray(frame).save(folder / f"{t:05d}{suffix}")
    return folder


def edit_json(path: Path, change: Callable[[Any], Any]) -> Path:
    """Apply the in-place ``change`` to the JSON in ``path`` and write it back (its return value is ignored)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


# The broken videos of the shared `seqformer infer` run: folder/file name -> how it is made (see Corpus.infer_run).
BROKEN_MEDIA = (
    "truncated_jpeg",
    "corrupt_jpeg",
    "empty_jpeg",
    "truncated_png",
    "corrupt_png",
    "frame_size_changes",
    "truncated.mp4",
    "corrupt.mp4",
    "empty.mp4",
)
ODD_NAMES = ("clip with spaces ü %2F+x", "new\nline", "..dots")


class Corpus:
    """Inputs shared by several cases, built lazily once per session under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @cached_property
    def dataset(self) -> tuple[Path, Path]:
        """A synthetic YouTube-VIS dataset of 3 tiny videos: ``(root, annotations.json)``."""
        from seqformer.pipelines.synthetic import generate_ytvis

        root = self.root / "dataset"
        return root, generate_ytvis(root, 3, height=32, width=32, min_frames=3, max_frames=4, seed=0)

    def dataset_copy(self, tmp: Path) -> tuple[Path, Path]:
        """A private copy of :attr:`dataset` that a case may damage."""
        root, annotations = self.dataset
        copy = tmp / "dataset"
        shutil.copytree(root, copy)
        return copy, copy / annotations.name

    @cached_property
    def checkpoint(self) -> Path:
        """A tiny model saved in our checkpoint format (folder with checksum)."""
        import torch

        from seqformer.model import ModelConfig, build_model
        from seqformer.platform.checkpoint import save_checkpoint

        cfg = ModelConfig(
            backbone="resnet18",
            frozen_batch_norm=False,
            freeze_stem=False,
            hidden_dim=32,
            dim_feedforward=64,
            enc_layers=1,
            dec_layers=1,
            nheads=4,
            num_queries=6,
            num_classes=5,
            num_frames=2,
            msda_backend="reference",
        )
        torch.manual_seed(0)
        model = build_model(cfg)
        folder = self.root / "checkpoint"
        save_checkpoint(folder, {"model": model.state_dict(), "model_config": cfg.to_dict(), "step": 0})
        return folder

    def checkpoint_copy(self, tmp: Path) -> Path:
        copy = tmp / "checkpoint"
        shutil.copytree(self.checkpoint, copy)
        return copy

    @cached_property
    def one_video(self) -> Path:
        """An input folder holding one good 3-frame video (model-loading cases need a video to process)."""
        return write_frame_folder(self.root / "one_video" / "clip", 3).parent

    def infer(self, model: str | Path, input_dir: Path, output: Path) -> tuple[int, str, str]:
        """``seqformer infer`` in this process, small and cheap (no overlays, 32-pixel input, no Ray)."""
        return cli(
            "infer",
            "--model",
            str(model),
            "--input",
            str(input_dir),
            "--output",
            str(output),
            "--local",
            "--short-side",
            "32",
            "--no-overlay",
            "--device",
            "cpu",
        )

    @cached_property
    def infer_run(self) -> dict[str, Any]:
        """One ``seqformer infer`` run over a folder with one good video, every broken video of
        :data:`BROKEN_MEDIA` and the odd names of :data:`ODD_NAMES`; returns code, summary, rows and folders."""
        from PIL import Image

        from seqformer.pipelines.synthetic import corrupt_garbage, corrupt_truncate
        from seqformer.pipelines.video_io import write_video

        inputs = self.root / "media"
        write_frame_folder(inputs / "good", 3)
        corrupt_truncate(write_frame_folder(inputs / "truncated_jpeg", 3) / "00001.jpg")
        corrupt_garbage(write_frame_folder(inputs / "corrupt_jpeg", 3) / "00002.jpg")
        (write_frame_folder(inputs / "empty_jpeg", 3) / "00000.jpg").write_bytes(b"")
        corrupt_truncate(write_frame_folder(inputs / "truncated_png", 3, ".png") / "00002.png")
        corrupt_garbage(write_frame_folder(inputs / "corrupt_png", 3, ".png") / "00000.png")
        folder = write_frame_folder(inputs / "frame_size_changes", 3)
        Image.fromarray(frames(1, height=20, width=20)[0]).save(folder / "00003.jpg")
        for name in ("truncated.mp4", "corrupt.mp4"):
            write_video(inputs / name, frames(6), fps=5)
        corrupt_truncate(inputs / "truncated.mp4", 0.8)
        corrupt_garbage(inputs / "corrupt.mp4")
        (inputs / "empty.mp4").write_bytes(b"")
        for index, name in enumerate(ODD_NAMES):
            write_frame_folder(inputs / name, 2, seed=index + 1)
        output = self.root / "media_out"
        code, stdout, stderr = self.infer(self.checkpoint, inputs, output)
        summary = json.loads((output / "summary.json").read_text())
        rows = {row["video"]: row for key in ("processed", "skipped", "failed") for row in summary[key]}
        status = {row["video"]: key for key in ("processed", "skipped", "failed") for row in summary[key]}
        return {
            "code": code,
            "stdout": stdout,
            "stderr": stderr,
            "summary": summary,
            "rows": rows,
            "status": status,
            "input": inputs,
            "output": output,
        }

    @cached_property
    def prepare_run(self) -> dict[str, Any]:
        """``seqformer prepare --local`` over a dataset whose video 1 has a truncated JPEG and video 2 a JPEG of
        random bytes (video 3 is intact)."""
        from seqformer.pipelines.synthetic import corrupt_garbage, corrupt_truncate

        root, annotations = self.dataset_copy(self.root / "prepare_media")
        videos = json.loads(annotations.read_text())["videos"]
        corrupt_truncate(root / "JPEGImages" / videos[0]["file_names"][1])
        corrupt_garbage(root / "JPEGImages" / videos[1]["file_names"][0])
        output = self.root / "prepare_media" / "prepared"
        code, stdout, stderr = prepare_cli(root, annotations, output)
        manifest = json.loads((output / "manifest.json").read_text())
        return {"code": code, "stdout": stdout, "stderr": stderr, "manifest": manifest, "root": root}


def prepare_cli(root: Path, annotations: Path, output: Path) -> tuple[int, str, str]:
    """``seqformer prepare --local`` (no Ray) of one YouTube-VIS source."""
    return cli(
        "prepare", "--local", "--ytvis-root", str(root), "--annotations", str(annotations), "--output", str(output)
    )


def skip_reasons(output: Path) -> dict[int, str]:
    """``video_id -> reason`` of the videos a prepare run skipped."""
    manifest = json.loads((output / "manifest.json").read_text())
    return {item["video_id"]: item["reason"] for item in manifest["skipped"]}
