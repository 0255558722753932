"""``prepare_frame``: frames that fit are validated and kept byte for byte; torn or foreign bytes are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from seqformer.pipelines.video_io import CorruptFrameError, prepare_frame


def _encode(fmt: str, height: int = 120, width: int = 200) -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.clip(rng.normal(128, 50, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_frame_that_fits_is_kept_byte_for_byte(fmt):
    data = _encode(fmt)
    stored, h, w, sh, sw = prepare_frame(data, max_size=200, quality=90, name="v/0.jpg")
    assert stored == data and (h, w, sh, sw) == (120, 200, 120, 200)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.5, 0.97])
@pytest.mark.parametrize("max_size", [200, 100])  # kept (validation decode) and resized (draft + resize)
def test_a_torn_frame_is_refused_with_its_name(fmt, keep, max_size):
    data = _encode(fmt)
    with pytest.raises(CorruptFrameError, match="v/3.jpg"):
        prepare_frame(data[: int(len(data) * keep)], max_size=max_size, quality=90, name="v/3.jpg")


def test_garbage_is_refused():
    with pytest.raises(CorruptFrameError, match="cannot decode"):
        prepare_frame(np.random.default_rng(1).bytes(5000), max_size=200, quality=90, name="v/4.jpg")


def test_a_larger_frame_is_resized_and_reencoded():
    stored, h, w, sh, sw = prepare_frame(_encode("JPEG"), max_size=100, quality=90)
    assert (h, w, sh, sw) == (120, 200, 60, 100)
    assert Image.open(io.BytesIO(stored)).size == (100, 60)
