"""Overlays, MP4 writing with PyAV and the contact sheet."""

from __future__ import annotations

import av
import numpy as np
from PIL import Image

from seqformer.pipelines.masks import rle_dict
from seqformer.pipelines.visualize import (
    contact_sheet,
    entry_label,
    instance_colours,
    overlay_frame,
    render_video_outputs,
    sample_indices,
    write_mp4,
)


def test_instance_colours_are_distinct():
    colours = instance_colours(20)
    assert len(set(colours)) == 20 and all(0 <= c <= 255 for rgb in colours for c in rgb)


def test_overlay_tints_only_the_mask_with_the_instance_colour_and_draws_a_label():
    frame = np.zeros((40, 60, 3), np.uint8)
    first = np.zeros((40, 60), bool)
    first[10:30, 5:25] = True
    second = np.zeros((40, 60), bool)
    second[20:35, 40:55] = True
    out = overlay_frame(frame, [first, second], [(255, 0, 0), (0, 0, 255)], ["cat 0.90", "dog 0.50"])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[29, 24].tolist() == [255, 0, 0]  # outline pixel in full colour
    inner = out[25, 12]
    assert inner[0] > 100 and inner[1] == 0 and inner[2] == 0  # translucent red fill
    assert out[34, 47, 2] > 100 and out[34, 47, 0] == 0
    assert out[2:8, 40:58].sum() == 0  # away from masks and labels nothing changes
    assert (out[10:20, 5:25] != out[25, 12]).any()  # a label is drawn at the box's top-left
    assert entry_label({"category_id": 3, "score": 0.876}, {3: "cat"}) == "cat 0.88"
    assert entry_label({"category_id": 4, "score": 0.5}) == "class 4 0.50"


def test_write_mp4_round_trips_frames_and_pads_odd_sizes(tmp_path):
    frames = [np.full((31, 45, 3), 20 * t, np.uint8) for t in range(5)]
    assert write_mp4(tmp_path / "o.mp4", iter(frames), fps=7) == 5
    with av.open(str(tmp_path / "o.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert float(container.streams.video[0].average_rate) == 7
    assert len(decoded) == 5 and decoded[0].shape == (32, 46, 3)
    assert abs(int(decoded[3][10, 10, 0]) - 60) <= 3


def test_contact_sheet_and_render_outputs(tmp_path):
    assert sample_indices(100, 8)[0] == 0 and sample_indices(100, 8)[-1] == 99 and sample_indices(3, 8) == [0, 1, 2]
    frames = [np.full((40, 64, 3), 10 * t, np.uint8) for t in range(10)]
    mask = np.zeros((40, 64), bool)
    mask[5:20, 5:30] = True
    results = [
        {"score": 0.9, "category_id": 1, "segmentations": [rle_dict(mask)] * 10},
        {"score": 0.1, "category_id": 2, "segmentations": [None] * 10},
    ]
    render_video_outputs(tmp_path, iter(frames), results, 10, fps=5, score_threshold=0.5)
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size == (4 * 64, 2 * (40 + 14))
    assert np.asarray(sheet)[10, 10].tolist() != [0, 0, 0]  # the first thumbnail shows the overlay
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    assert contact_sheet(frames[:3], ["a", "b", "c"], columns=4).size == (3 * 64, 54)
