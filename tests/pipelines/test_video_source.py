"""Listing an input folder into videos and skipped items; safe names; streamed decoding with PIL / PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seqformer.pipelines.video_io import CorruptFrameError, write_video
from seqformer.pipelines.video_source import iter_frames, list_videos, probe_video, safe_name


def moving_square_frames(num_frames: int, height: int = 48, width: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Frames of two coloured squares moving over a noisy background (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(num_frames):
        frame = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
        frame[8 + t : 22 + t, 6 + 2 * t : 20 + 2 * t] = (230, 40, 40)
        frame[26:40, 40 - 2 * t : 54 - 2 * t] = (40, 200, 240)
        frames.append(frame)
    return frames


def make_mixed_folder(root: Path) -> Path:
    """Two frame folders (jpg, png), a good mp4, a corrupt mp4, a text file and an empty folder."""
    for name, suffix, count, seed in (("clips/a", ".jpg", 6, 0), ("clips/b", ".png", 5, 1)):
        folder = root / name
        folder.mkdir(parents=True)
        for t, frame in enumerate(moving_square_frames(count, seed=seed)):
            Image.fromarray(frame).save(folder / f"{t:05d}{suffix}")
    write_video(root / "movie.mp4", moving_square_frames(7, seed=2), fps=5)
    (root / "broken.mp4").write_bytes(np.random.default_rng(3).bytes(3000))
    (root / "notes.txt").write_text("not a video")
    (root / "empty").mkdir()
    return root


def test_list_videos_finds_frame_folders_and_files_and_reports_the_rest(tmp_path):
    videos, skipped = list_videos(make_mixed_folder(tmp_path))
    assert [(v.video, v.kind) for v in videos] == [
        ("broken.mp4", "file"),
        ("clips/a", "frames"),
        ("clips/b", "frames"),
        ("movie.mp4", "file"),
    ]
    assert [s["video"] for s in skipped] == ["empty", "notes.txt"]
    assert "empty folder" in skipped[0]["reason"] and "not a video" in skipped[1]["reason"]
    assert all(Path(v.path).is_absolute() for v in videos)


def test_list_videos_rejects_a_missing_input_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="input folder not found"):
        list_videos(tmp_path / "nope")


def test_safe_name_escapes_odd_characters_and_never_yields_traversal():
    assert safe_name("cats/clip_1.mp4") == "cats+clip_1.mp4"
    assert safe_name("a b/c+d") == "a%20b+c%2Bd"
    assert safe_name(".hidden/x") == "%2Ehidden+x"
    assert safe_name("..x") == "%2E.x"
    names = {safe_name(p) for p in ("a/b", "a+b", "a%2Bb", "a b", "a%20b", "é")}
    assert len(names) == 6 and all("/" not in n and n not in (".", "..") for n in names)
    long = safe_name("x" * 300)
    assert len(long) <= 180 and long != safe_name("x" * 301)
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(ValueError, match="relative path"):
            safe_name(bad)


def test_iter_frames_streams_frame_folders_and_mp4_files(tmp_path):
    videos, _ = list_videos(make_mixed_folder(tmp_path))
    by_name = {v.video: v for v in videos}
    png = list(iter_frames(by_name["clips/b"]))
    assert len(png) == 5 and png[0].shape == (48, 64, 3) and png[0].dtype == np.uint8
    np.testing.assert_array_equal(png[2], moving_square_frames(5, seed=1)[2])  # png is lossless
    mp4 = list(iter_frames(by_name["movie.mp4"]))
    assert len(mp4) == 7 and mp4[0].shape == (48, 64, 3)
    info = probe_video(by_name["movie.mp4"])
    assert (info.height, info.width, info.fps) == (48, 64, 5.0)
    assert probe_video(by_name["clips/a"]).num_frames == 6


def test_corrupt_video_raises_corrupt_frame_error_naming_the_file(tmp_path):
    videos, _ = list_videos(make_mixed_folder(tmp_path))
    broken = next(v for v in videos if v.video == "broken.mp4")
    with pytest.raises(CorruptFrameError, match="broken.mp4"):
        probe_video(broken)
    with pytest.raises(CorruptFrameError, match="broken.mp4"):
        list(iter_frames(broken))


def test_truncated_frame_and_size_change_fail_when_reached(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for t, frame in enumerate(moving_square_frames(3)):
        Image.fromarray(frame).save(folder / f"{t}.jpg")
    data = (folder / "2.jpg").read_bytes()
    (folder / "2.jpg").write_bytes(data[: len(data) // 3])
    entry = list_videos(tmp_path)[0][0]
    frames = iter_frames(entry)
    assert next(frames).shape == (48, 64, 3)
    next(frames)
    with pytest.raises(CorruptFrameError, match="2.jpg"):
        next(frames)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "2.jpg")
    with pytest.raises(CorruptFrameError, match="share one size"):
        list(iter_frames(entry))
