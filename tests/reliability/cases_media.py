"""Bad media and odd video names: `seqformer infer` (batch inference) and `seqformer prepare` (clip records)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from seqformer.pipelines.video_source import safe_name
from tests.reliability.corpus import Case, Corpus, scrub


def _infer_fails(name: str, reason: str) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        run = corpus.infer_run
        row = run["rows"].get(name, {})
        note(
            f"exit {run['code']}; `{name}` failed: {scrub(row.get('reason', '(not reported)'), run['input'])}; "
            f"the good video: {run['status'].get('good')}"
        )
        assert run["status"].get(name) == "failed"
        assert re.search(reason, row["reason"]), row["reason"]
        assert run["status"]["good"] == "processed"
        assert run["code"] == 1  # some videos failed
        assert not (run["output"] / "videos" / safe_name(name)).exists()  # no partial outputs for the failed video
        assert name in run["stdout"]  # and the command line lists it

    return check


def _odd_names(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
    run = corpus.infer_run
    videos = run["output"] / "videos"
    made = sorted(p.name for p in videos.iterdir())
    note(f"processed; output folders {made}")
    for name in ("clip with spaces ü %2F+x", "new\nline"):
        assert run["status"][name] == "processed"
        folder = videos / safe_name(name)
        assert folder.parent == videos and (folder / "results.json").is_file()
    assert all("/" not in n and "\n" not in n and " " not in n and not n.startswith(".") for n in made)
    assert {p.resolve().parent for p in videos.iterdir()} == {videos.resolve()}


def _dot_names(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
    run = corpus.infer_run
    note("ignored like every hidden name: not processed, not listed, nothing written for it")
    assert "..dots" not in run["status"]
    assert not any(".." in p.name.replace("%2E", "") for p in (run["output"] / "videos").iterdir())


def _safe_name_traversal(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
    with pytest.raises(ValueError) as err:
        safe_name("../../etc/passwd")
    note(f"ValueError: {scrub(str(err.value))}")
    assert "'..'" in str(err.value)
    with pytest.raises(ValueError):
        safe_name("/etc/passwd")


def _prepare_skips(video_id: int, reason: str) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        run = corpus.prepare_run
        reasons = {s["video_id"]: s["reason"] for s in run["manifest"]["skipped"]}
        reason_seen = scrub(reasons.get(video_id, "(not skipped)"), run["root"])
        records = run["manifest"]["records"]
        note(f"exit {run['code']}; video {video_id} skipped: {reason_seen}; {records} record(s) written")
        assert run["code"] == 0
        assert re.search(reason, reasons[video_id])
        assert run["manifest"]["records"] >= 1 and 3 not in reasons
        assert f"skipped ytvis video {video_id}" in run["stdout"]

    return check


CASES = [
    Case(
        "media/truncated-jpeg",
        "frame folder with a JPEG cut to half its bytes (`seqformer infer`)",
        "that video fails with the frame's path and 'truncated'; the rest are processed; exit 1",
        _infer_fails("truncated_jpeg", r"(?i)truncated_jpeg/00001\.jpg: cannot decode image.*truncated"),
    ),
    Case(
        "media/corrupt-jpeg",
        "frame folder with a JPEG of random bytes",
        "that video fails naming the frame; the rest are processed; exit 1",
        _infer_fails("corrupt_jpeg", r"corrupt_jpeg/00002\.jpg: cannot decode image"),
    ),
    Case(
        "media/empty-jpeg",
        "frame folder with a 0-byte JPEG",
        "that video fails naming the frame; the rest are processed; exit 1",
        _infer_fails("empty_jpeg", r"empty_jpeg/00000\.jpg: cannot decode image"),
    ),
    Case(
        "media/truncated-png",
        "frame folder with a PNG cut to half its bytes",
        "that video fails naming the frame; the rest are processed; exit 1",
        _infer_fails("truncated_png", r"(?i)truncated_png/00002\.png: cannot decode image.*truncated"),
    ),
    Case(
        "media/corrupt-png",
        "frame folder with a PNG of random bytes",
        "that video fails naming the frame; the rest are processed; exit 1",
        _infer_fails("corrupt_png", r"corrupt_png/00000\.png: cannot decode image"),
    ),
    Case(
        "media/frame-size-changes",
        "frame folder whose last frame has another size",
        "that video fails naming the frame index and both sizes; exit 1",
        _infer_fails("frame_size_changes", r"frame 3 is 20x20 but the first frame is 48x40"),
    ),
    Case(
        "media/truncated-mp4",
        "MP4 cut to 80 % of its bytes (index lost)",
        "that video fails with 'cannot read video'; the rest are processed; exit 1",
        _infer_fails("truncated.mp4", r"truncated\.mp4: cannot (read|decode) video"),
    ),
    Case(
        "media/corrupt-mp4",
        "MP4 of random bytes",
        "that video fails with 'cannot read video'; exit 1",
        _infer_fails("corrupt.mp4", r"corrupt\.mp4: cannot read video"),
    ),
    Case(
        "media/empty-mp4",
        "0-byte .mp4 file",
        "that video fails with 'cannot read video'; exit 1",
        _infer_fails("empty.mp4", r"empty\.mp4: cannot read video"),
    ),
    Case(
        "names/odd-characters",
        "videos named `clip with spaces ü %2F+x` and `new<LF>line`",
        "processed; each output folder is one percent-encoded name directly under `videos/`",
        _odd_names,
    ),
    Case(
        "names/dot-prefixed",
        "a video folder named `..dots`",
        "ignored as a hidden name (documented in `list_videos`); nothing written for it",
        _dot_names,
    ),
    Case(
        "names/path-traversal",
        "`safe_name('../../etc/passwd')` (the output-folder name of a video)",
        "ValueError: no '..' components; absolute paths refused too",
        _safe_name_traversal,
    ),
    Case(
        "prepare/truncated-jpeg",
        "YouTube-VIS frame cut to half its bytes (`seqformer prepare`)",
        "that video skipped with reason 'corrupt frame' in manifest.json and on stdout; others prepared; exit 0",
        _prepare_skips(1, r"corrupt frame"),
    ),
    Case(
        "prepare/corrupt-jpeg",
        "YouTube-VIS frame of random bytes (`seqformer prepare`)",
        "that video skipped with reason 'corrupt frame'; others prepared; exit 0",
        _prepare_skips(2, r"corrupt frame"),
    ),
]
