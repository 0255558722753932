"""Bad annotation JSON (`seqformer prepare`) and bad results JSON (`seqformer evaluate`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.reliability.corpus import Case, Corpus, edit_json, prepare_cli, scrub, skip_reasons

Change = Callable[[Any], Any]


def _first_video(data: dict[str, Any]) -> dict[str, Any]:
    return data["videos"][0]


def _prepare_refuses(change: Change, message: str) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    """The annotation file is refused as a whole: exit 2, a message naming the file and field, nothing written."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        root, annotations = corpus.dataset_copy(tmp)
        if isinstance(change, str):
            annotations.write_text(change)
        else:
            edit_json(annotations, change)
        code, _, err = prepare_cli(root, annotations, tmp / "out")
        note(f"exit {code}: {scrub(err, tmp)}")
        assert code == 2
        assert re.search(message, err), err
        assert str(annotations) in err  # names the file
        assert not (tmp / "out" / "manifest.json").exists()

    return check


def _prepare_skips(
    change: Change, reason: str, video_id: int = 1
) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    """One video is skipped with a reason in manifest.json; the others are prepared."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        root, annotations = corpus.dataset_copy(tmp)
        edit_json(annotations, change)
        code, _, err = prepare_cli(root, annotations, tmp / "out")
        reasons = skip_reasons(tmp / "out") if code == 0 else {}
        manifest = json.loads((tmp / "out" / "manifest.json").read_text()) if code == 0 else {"records": 0}
        note(
            f"exit {code}; video {video_id} skipped: {scrub(reasons.get(video_id, err or '(not skipped)'), tmp)}; "
            f"{manifest['records']} record(s) written"
        )
        assert code == 0, err
        assert re.search(reason, reasons[video_id]), reasons
        assert set(reasons) == {video_id} and manifest["records"] == 2

    return check


def _traversal(absolute: bool) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    """file_names that leave the dataset root must not be read: the video is skipped (or the file refused)."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        root, annotations = corpus.dataset_copy(tmp)
        video = json.loads(annotations.read_text())["videos"][0]
        outside = tmp / "private"
        outside.mkdir()
        for t, name in enumerate(video["file_names"]):  # readable images outside the dataset root
            (outside / f"{t:05d}.jpg").write_bytes((root / "JPEGImages" / name).read_bytes())
        names = [
            str(outside / f"{t:05d}.jpg") if absolute else f"../../private/{t:05d}.jpg"
            for t in range(len(video["file_names"]))
        ]
        edit_json(annotations, lambda d: _first_video(d).update(file_names=names))
        code, _, err = prepare_cli(root, annotations, tmp / "out")
        reasons = skip_reasons(tmp / "out") if code == 0 else {}
        records = json.loads((tmp / "out" / "manifest.json").read_text())["records"] if code == 0 else 0
        outcome = f"video 1 skipped: {reasons[1]}" if 1 in reasons else f"{records} records, video 1 read from outside"
        note(f"exit {code}; {scrub(err, tmp) if code else scrub(outcome, tmp)}")
        assert code == 2 or 1 in reasons, "frames outside the dataset root were read into the clip records"

    return check


def _nul_in_name(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
    root, annotations = corpus.dataset_copy(tmp)
    edit_json(annotations, lambda d: _first_video(d)["file_names"].__setitem__(1, "video_0_00000/\x00.jpg"))
    code, _, err = prepare_cli(root, annotations, tmp / "out")
    reasons = skip_reasons(tmp / "out") if code == 0 else {}
    note(f"exit {code}: {scrub(err, tmp)}" if code else f"exit 0; video 1 skipped: {reasons.get(1)}")
    assert code == 2 or 1 in reasons
    assert code == 0 or str(annotations) in err or "video" in err  # the message must say which file / video


# ----------------------------------------------------------------------------------------------------- results
def _results(corpus: Corpus) -> tuple[Path, list[dict[str, Any]]]:
    """The ground truth of the shared dataset and perfect predictions for it."""
    _, annotations = corpus.dataset
    gt = json.loads(annotations.read_text())
    results = [
        {"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.9, "segmentations": a["segmentations"]}
        for a in gt["annotations"]
    ]
    return annotations, results


def _evaluate(
    change: Change | str,
    *,
    code: int,
    message: str,
    strict: bool = False,
) -> Callable[[Corpus, Path, Callable[[str], None]], None]:
    """`seqformer evaluate` of damaged results: refused (exit 2, message) or scored with a warning (exit 0)."""

    def check(corpus: Corpus, tmp: Path, note: Callable[[str], None]) -> None:
        from tests.reliability.corpus import cli

        gt, results = _results(corpus)
        path = tmp / "results.json"
        if isinstance(change, str):
            path.write_text(change)
        else:
            replaced = change(results)  # an in-place edit, or the whole file as text
            path.write_text(replaced if isinstance(replaced, str) else json.dumps(results))
        args = ["evaluate", "--gt", str(gt), "--results", str(path), "--out", str(tmp / "metrics.json")]
        got, _, err = cli(*args, *(["--strict"] if strict else []))
        if got == 0:
            metrics = json.loads((tmp / "metrics.json").read_text())
            note(f"exit 0, AP {metrics['AP']:.3f}; warning: {scrub(metrics['warnings'][0], tmp)}")
            assert re.search(message, metrics["warnings"][0]), metrics["warnings"]
            assert 0.0 <= metrics["AP"] <= 1.0
        else:
            note(f"exit {got}: {scrub(err, tmp)}")
            assert re.search(message, err), err
        assert got == code

    return check


def _set(index: int, key: str, value: Any) -> Change:
    return lambda results: results[index].__setitem__(key, value)


CASES = [
    Case(
        "annotations/not-json",
        "annotation file cut in the middle (invalid JSON)",
        "exit 2: '<file>: not valid JSON (line, column)'; nothing written",
        _prepare_refuses('{"videos": [{"id": 1, ', r"not valid JSON \(line 1, column \d+"),
    ),
    Case(
        "annotations/wrong-schema",
        "annotation file whose top level is a list",
        "exit 2 naming `<top level>` and what was expected",
        _prepare_refuses('[{"videos": []}]', r"<top level>: expected a JSON object"),
    ),
    Case(
        "annotations/missing-field",
        "annotation file without `videos`",
        "exit 2: missing top-level key 'videos'",
        _prepare_refuses(lambda d: d.pop("videos"), r"missing .*'videos'"),
    ),
    Case(
        "annotations/missing-segmentations",
        "an annotation without `segmentations`",
        "exit 2 naming `annotations[0].segmentations`",
        _prepare_refuses(lambda d: d["annotations"][0].pop("segmentations"), r"annotations\[0\]\.segmentations"),
    ),
    Case(
        "annotations/wrong-type",
        'video id given as the string "1"',
        "exit 2 naming `videos[0].id`",
        _prepare_refuses(lambda d: _first_video(d).update(id="1"), r"videos\[0\]\.id: expected an integer"),
    ),
    Case(
        "annotations/bool-as-int",
        "video id given as `true` (a bool passes Python's int check)",
        "exit 2 naming `videos[0].id`",
        _prepare_refuses(lambda d: _first_video(d).update(id=True), r"videos\[0\]\.id: expected an integer"),
    ),
    Case(
        "annotations/huge-height",
        "video height 10^9 (frames are 32x32)",
        "video skipped: 'frame size disagrees'; no huge allocation; others prepared",
        _prepare_skips(lambda d: _first_video(d).update(height=10**9), r"frame size disagrees"),
    ),
    Case(
        "annotations/huge-length",
        "video length 10^12",
        "video skipped: 'frame count disagrees'; others prepared",
        _prepare_skips(lambda d: _first_video(d).update(length=10**12), r"frame count disagrees"),
    ),
    Case(
        "annotations/huge-rle",
        "segmentation RLE of size 10^6 x 10^6",
        "video skipped: RLE size disagrees with the video; nothing decoded at that size",
        _prepare_skips(
            lambda d: d["annotations"][0]["segmentations"].__setitem__(
                next(i for i, s in enumerate(d["annotations"][0]["segmentations"]) if s),
                {"size": [10**6, 10**6], "counts": "0"},
            ),
            r"RLE size \[1000000, 1000000\] disagrees",
            video_id=1,
        ),
    ),
    Case(
        "annotations/huge-category-id",
        "category id 10^30",
        "video skipped: unknown category id",
        _prepare_skips(lambda d: d["annotations"][0].update(category_id=10**30), r"unknown category id 10{30}"),
    ),
    Case(
        "annotations/path-traversal",
        "`file_names` of video 1 are `../../private/00000.jpg`, ... (images outside the dataset root)",
        "refused: the video is skipped naming the path (nothing outside the root is read)",
        _traversal(absolute=False),
    ),
    Case(
        "annotations/absolute-path",
        "`file_names` of video 1 are absolute paths to images elsewhere",
        "refused: the video is skipped naming the path",
        _traversal(absolute=True),
    ),
    Case(
        "annotations/nul-in-file-name",
        "a file name containing a NUL byte",
        "exit 2 (or the video skipped) with a message naming the file or video",
        _nul_in_name,
    ),
    Case(
        "results/unknown-video-id",
        "results JSON naming video_id 999 (`seqformer evaluate`)",
        "exit 2: 'video_id 999 is not a video of the ground truth'",
        _evaluate(_set(0, "video_id", 999), code=2, message=r"video_id 999 is not a video of the ground truth"),
    ),
    Case(
        "results/unknown-category-id",
        "results JSON with category_id 999",
        "warning 'not a ground-truth category' and the official numbers (the prediction is dropped); exit 0",
        _evaluate(_set(0, "category_id", 999), code=0, message=r"category_id 999 is not a ground-truth category"),
    ),
    Case(
        "results/unknown-category-strict",
        "the same with `--strict`",
        "exit 2 with the same message",
        _evaluate(_set(0, "category_id", 999), code=2, message=r"category_id 999.*strict mode", strict=True),
    ),
    Case(
        "results/not-json",
        "results file cut in the middle",
        "exit 2: 'is not valid JSON'",
        _evaluate('[{"video_id": 1, "sc', code=2, message=r"is not valid JSON"),
    ),
    Case(
        "results/not-a-list",
        "results JSON that is an object",
        "exit 2: 'expected a JSON list'",
        _evaluate(lambda r: json.dumps({"results": r}), code=2, message=r"expected a JSON list of result objects"),
    ),
    Case(
        "results/wrong-type",
        'score given as the string "high"',
        "exit 2: 'score must be a number'",
        _evaluate(_set(0, "score", "high"), code=2, message=r"score must be a number, got 'high'"),
    ),
    Case(
        "results/missing-field",
        "a result without `segmentations`",
        "exit 2 naming the missing key",
        _evaluate(lambda r: r[0].pop("segmentations"), code=2, message=r"missing \['segmentations'\]"),
    ),
    Case(
        "results/corrupt-rle",
        "an RLE whose counts are not RLE text",
        "exit 2: 'RLE cannot be decoded'",
        _evaluate(
            lambda r: r[0]["segmentations"].__setitem__(
                next(i for i, s in enumerate(r[0]["segmentations"]) if s), {"size": [32, 32], "counts": "\x00garbage"}
            ),
            code=2,
            message=r"RLE cannot be decoded",
        ),
    ),
    Case(
        "results/non-finite-score",
        "score 1e400 (parsed as infinity)",
        "warning 'score inf is not finite' and numbers; exit 0",
        _evaluate(
            lambda r: json.dumps(r).replace('"score": 0.9', '"score": 1e400', 1),
            code=0,
            message=r"score \S*inf\S* is not finite",
        ),
    ),
    Case(
        "results/empty",
        "an empty results list",
        "exit 2: 'nothing to score'",
        _evaluate("[]", code=2, message=r"the results list is empty"),
    ),
]
