"""Batch inference through Ray Data with an actor pool gives the same outputs as the local loop."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from seqformer.pipelines.video_source import iter_frames, list_videos
from seqformer.platform.infer import infer_folder, make_predictor
from tests.platform.test_infer import OPTIONS, batch_run, checkpoint, mixed_folder, tiny_model  # noqa: F401


@pytest.fixture(scope="module")
def local_ray():
    """A local two-CPU Ray on loopback for this module."""
    for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_AUTH_MODE": "disabled"}.items():
        os.environ[key] = value
    os.environ.pop("RAY_ADDRESS", None)
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_actor_pool_matches_the_local_run(local_ray, checkpoint, mixed_folder, batch_run, tiny_model,  # noqa: F811
                                              tmp_path):
    _, local_report = batch_run
    options = dataclasses.replace(OPTIONS, use_ray=True, num_actors=1, cpus_per_actor=1)
    seen = []
    report = infer_folder(checkpoint, mixed_folder, tmp_path, options, on_video=seen.append)
    assert sorted(r["video"] for r in seen) == ["broken.mp4", "clips/a", "clips/b", "movie.mp4"]
    assert [p["video"] for p in report["processed"]] == [p["video"] for p in local_report["processed"]]
    assert report["skipped"] == local_report["skipped"]
    assert [f["video"] for f in report["failed"]] == ["broken.mp4"] and "broken.mp4" in report["failed"][0]["reason"]
    assert (tmp_path / "videos" / "movie.mp4" / "overlay.mp4").is_file()
    # Same code as the local run; bit-identical once the thread count matches the actor's (1 thread here), since
    # float reductions are ordered differently with another number of threads.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictor = make_predictor(tiny_model, options, "cpu")
        for entry in list_videos(mixed_folder)[0]:
            if entry.video != "broken.mp4":
                saved = json.loads((tmp_path / "videos" / entry.name / "results.json").read_text())["results"]
                assert saved == predictor.predict_video(iter_frames(entry))
    finally:
        torch.set_num_threads(threads)
    # the merged file holds exactly the per-video results, with ids in relative-path order
    merged = json.loads((tmp_path / "results.json").read_text())
    per_video = []
    for video_id, name in enumerate(("clips+a", "clips+b", "movie.mp4"), start=1):
        saved = json.loads((tmp_path / "videos" / name / "results.json").read_text())["results"]
        per_video += [{"video_id": video_id, **entry} for entry in saved]
    assert merged == per_video

