"""Batch inference (local loop), the Predictor, resumability, windowed identity, and the CLI command."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.model import ModelConfig, build_model, postprocess_video
from seqformer.pipelines.inference import AssociationConfig, VideoTracker, owned_end, preprocess_frame
from seqformer.pipelines.video_source import iter_frames, list_videos
from seqformer.platform.checkpoint import save_checkpoint
from seqformer.platform.infer import InferOptions, infer_folder, make_predictor
from seqformer.platform.predictor import Predictor
from tests.pipelines.test_video_source import make_mixed_folder, moving_square_frames

TINY = ModelConfig(hidden_dim=32, dim_feedforward=64, enc_layers=1, dec_layers=1, nheads=4, num_queries=10,
                   num_classes=5, num_frames=2, msda_backend="reference")
OPTIONS = InferOptions(short_side=32, score_threshold=0.0, use_ray=False)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, {"model": tiny_model.state_dict(), "model_config": TINY.to_dict(), "step": 0})
    return str(folder)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    return make_mixed_folder(tmp_path_factory.mktemp("inputs"))


@pytest.fixture(scope="module")
def batch_run(checkpoint, mixed_folder, tmp_path_factory):
    """One local batch run over the mixed folder (model loaded from the checkpoint, as the CLI does)."""
    output = tmp_path_factory.mktemp("out")
    return output, infer_folder(checkpoint, mixed_folder, output, OPTIONS)


def test_batch_reports_processed_skipped_and_failed_and_writes_outputs(batch_run):
    output, report = batch_run
    assert [p["video"] for p in report["processed"]] == ["clips/a", "clips/b", "movie.mp4"]
    assert [p["frames"] for p in report["processed"]] == [6, 5, 7]
    assert [s["video"] for s in report["skipped"]] == ["empty", "notes.txt"]
    assert [f["video"] for f in report["failed"]] == ["broken.mp4"] and "broken.mp4" in report["failed"][0]["reason"]
    assert report["frames_per_second"] > 0 and json.loads((output / "summary.json").read_text()) == report
    for name in ("clips+a", "clips+b", "movie.mp4"):
        folder = output / "videos" / name
        assert sorted(p.name for p in folder.iterdir()) == ["_COMPLETE", "contact_sheet.png", "overlay.mp4",
                                                             "results.json"]
    assert not (output / "videos" / "broken.mp4").exists()
    assert not [p for p in (output / "videos").iterdir() if p.name.startswith(".")]  # no staging left behind
    index = json.loads((output / "video_index.json").read_text())
    assert [(v["id"], v["video"], v["length"]) for v in index] == [(1, "clips/a", 6), (2, "clips/b", 5),
                                                                    (3, "movie.mp4", 7)]
    merged = json.loads((output / "results.json").read_text())
    assert {r["video_id"] for r in merged} == {1, 2, 3}
    assert all(len(r["segmentations"]) == {1: 6, 2: 5, 3: 7}[r["video_id"]] for r in merged)


def test_batch_results_equal_single_video_predictor_exactly(batch_run, tiny_model, mixed_folder):
    output, _ = batch_run
    predictor = make_predictor(tiny_model, OPTIONS, "cpu")
    for entry in list_videos(mixed_folder)[0]:
        if entry.video == "broken.mp4":
            continue
        saved = json.loads((output / "videos" / entry.name / "results.json").read_text())["results"]
        assert saved and saved == predictor.predict_video(iter_frames(entry))


def test_resumed_run_skips_finished_videos_and_redoes_incomplete_ones(batch_run, checkpoint, mixed_folder):
    output, _ = batch_run
    before = json.loads((output / "results.json").read_text())
    marker = output / "videos" / "clips+b" / "_COMPLETE"
    marker.unlink()  # as if the run had died before this video's commit
    again = infer_folder(checkpoint, mixed_folder, output, OPTIONS)
    assert [p["video"] for p in again["processed"]] == ["clips/b"]
    assert {s["video"] for s in again["skipped"]} == {"empty", "notes.txt", "clips/a", "movie.mp4"}
    assert "already complete" in next(s for s in again["skipped"] if s["video"] == "clips/a")["reason"]
    assert [f["video"] for f in again["failed"]] == ["broken.mp4"]
    assert json.loads((output / "results.json").read_text()) == before  # merged over redone + resumed videos
    assert len(json.loads((output / "video_index.json").read_text())) == 3
    forced = infer_folder(checkpoint, mixed_folder, output, dataclasses.replace(OPTIONS, overwrite=True))
    assert [p["video"] for p in forced["processed"]] == ["clips/a", "clips/b", "movie.mp4"]


def test_whole_video_predictor_is_postprocess_of_one_forward(tiny_model):
    frames = moving_square_frames(6)
    clip = torch.stack([preprocess_frame(f, 32) for f in frames])
    with torch.inference_mode():
        out = tiny_model([clip], size_divisibility=1)
    expected = postprocess_video(out, 0, input_size=(32, 42), orig_size=(48, 64))
    assert Predictor(tiny_model, short_side=32).predict_video(iter(frames)) == expected
    assert Predictor(tiny_model, short_side=32, window=6, overlap=2).predict_video(frames) == expected


def test_tracker_on_a_single_window_reproduces_postprocess_video(tiny_model):
    frames = moving_square_frames(5)
    predictor = Predictor(tiny_model, short_side=32)
    clip = torch.stack([preprocess_frame(f, 32) for f in frames])
    window = predictor._window_output(clip, 0)
    for top_k, candidates in ((10, 10), (3, 6)):
        config = AssociationConfig(top_k=top_k, candidates=candidates, nms_iou=None)  # the official selection
        tracker = VideoTracker((48, 64), config)
        tracker.add_window(window, owned_end(5, 0, True))
        with torch.inference_mode():
            out = tiny_model([clip], size_divisibility=1)
            expected = postprocess_video(out, 0, input_size=(32, 42), orig_size=(48, 64), top_k=top_k)
        assert tracker.results(5) == expected


def test_predictor_crops_masks_at_the_models_mask_stride():
    """A model with ``mask_out_stride=2`` gives masks at stride 2; both the whole-video and the windowed paths keep
    the whole unpadded map (stride-4 arithmetic would cut it to its top-left quarter)."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, mask_out_stride=2)).eval()
    frames = moving_square_frames(5)
    clip = torch.stack([preprocess_frame(f, 32) for f in frames])  # [5, 3, 32, 42]
    predictor = Predictor(model, short_side=32)
    window = predictor._window_output(clip, 0)
    assert window.mask_logits.shape[-2:] == (16, 21)
    with torch.inference_mode():
        out = model([clip], size_divisibility=1)
    expected = postprocess_video(out, 0, input_size=(32, 42), orig_size=(48, 64), mask_stride=2)
    assert expected and predictor.predict_video(frames) == expected
    tracker = VideoTracker((48, 64), AssociationConfig(top_k=10, candidates=10, nms_iou=None))
    tracker.add_window(window, owned_end(5, 0, True))
    assert tracker.results(5) == expected


def test_windowed_inference_keeps_identities_across_two_concatenated_copies(tiny_model):
    """Video = A + A (4 frames each), windows of 4 with overlap 2: windows [0,4) and [4,8) see identical frames,
    so an instance keeps its identity exactly when its frame-t and frame-(t+4) masks agree on the frames those
    two windows own (1, 2 and 5, 6), and its score equals the whole-clip score on A."""
    copy = moving_square_frames(4, seed=5)
    predictor = Predictor(tiny_model, short_side=32, window=4, overlap=2,
                          association=AssociationConfig(top_k=10, candidates=10))
    prediction = predictor.predict_frames(iter(copy + copy))
    assert prediction.windows == 3 and prediction.num_frames == 8
    single = Predictor(tiny_model, short_side=32).predict_video(copy)
    assert len(prediction.results) == len(single) > 0
    for entry in prediction.results:
        segs = entry["segmentations"]
        assert segs[1] == segs[5] and segs[2] == segs[6]
    # every track continued through the middle window (none was split into two)
    assert len({(r["category_id"], json.dumps(r["segmentations"][1])) for r in prediction.results}) == len(single)


def test_predictor_rejects_bad_windows_and_empty_videos(tiny_model):
    with pytest.raises(ValueError, match="overlap"):
        Predictor(tiny_model, window=4, overlap=4)
    with pytest.raises(ValueError, match="no frames"):
        Predictor(tiny_model, short_side=32, window=4, overlap=1).predict_video(iter([]))
    with pytest.raises(ValueError, match="share one size"):
        Predictor(tiny_model, short_side=32).predict_video([np.zeros((48, 64, 3), np.uint8),
                                                           np.zeros((40, 64, 3), np.uint8)])


def test_cli_infer_runs_locally_and_returns_1_when_a_video_failed(checkpoint, mixed_folder, tmp_path, capsys):
    from seqformer.platform.cli import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("movie.mp4", "broken.mp4", "notes.txt"):
        shutil.copy(mixed_folder / name, inputs / name)
    code = main(["infer", "--model", checkpoint, "--input", str(inputs), "--output", str(tmp_path / "out"),
                 "--local", "--window", "4", "--overlap", "2", "--short-side", "32", "--no-overlay"])
    assert code == 1
    text = capsys.readouterr().out
    assert "1 processed, 1 skipped, 1 failed" in text and "broken.mp4" in text and "notes.txt" in text
    report = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [p["video"] for p in report["processed"]] == ["movie.mp4"]
    results = json.loads((tmp_path / "out" / "videos" / "movie.mp4" / "results.json").read_text())
    assert results["windows"] == 3 and results["num_frames"] == 7
    assert not (tmp_path / "out" / "videos" / "movie.mp4" / "overlay.mp4").exists()
