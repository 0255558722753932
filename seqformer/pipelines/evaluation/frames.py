"""Per-frame mask tables: every compressed RLE string of a set of tracks in one byte buffer, plus int64 columns.

The compiled helpers (:mod:`._extension`) read these tables directly: each string is decoded once for its area (the
compiled file readers do it while the string is in cache) and once more, into runs, for the video IoU sums of the
predictions that meet a track; no mask is ever expanded to pixels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from seqformer.pipelines.evaluation import rle as rle_utils
from seqformer.pipelines.evaluation._extension import load

logger = logging.getLogger(__name__)

_REASONS = {
    1: "characters outside '0'..'o' in the compressed counts",
    2: "the compressed counts end in the middle of a run",
    3: "a negative run length",
    4: "the run lengths do not sum to height*width",
    5: "a run written with more than 12 characters",
}


@dataclass
class FrameTable:
    """Masks of several owners (predictions or GT tracks), frames of owner ``o`` at ``offsets[o]:offsets[o + 1]``.

    Attributes:
        buf: the compressed strings laid end to end (ASCII bytes).
        start: int64 ``[F]`` offset of each frame's string in ``buf``; -1 where the frame is absent (null).
        length: int64 ``[F]`` string lengths (0 where absent).
        height: int64 ``[F]`` mask heights (0 where absent); width: the same for widths.
        area: int64 ``[F]`` mask pixel counts (0 where absent), filled by :meth:`compute_areas`.
        offsets: int64 ``[num_owners + 1]`` first frame of each owner.
    """

    buf: bytes | bytearray | np.ndarray
    start: np.ndarray
    length: np.ndarray
    height: np.ndarray
    width: np.ndarray
    area: np.ndarray
    offsets: np.ndarray

    @property
    def num_owners(self) -> int:
        """Number of predictions or tracks in the table."""
        return len(self.offsets) - 1

    def frame_counts(self) -> np.ndarray:
        """int64 ``[num_owners]`` frames listed per owner."""
        return np.diff(self.offsets)

    def counts_text(self, frame: int) -> str:
        """The compressed string of one frame (for messages)."""
        begin = int(self.start[frame])
        return bytes(self.buf[begin : begin + int(self.length[frame])]).decode("ascii", "replace")

    def compute_areas(self) -> int | None:
        """Decode every present string once, fill :attr:`area`, and return the first frame that is not a valid mask
        of its size (bad characters, unterminated run, negative run, runs not summing to height*width), or None."""
        present = np.flatnonzero(self.start >= 0)
        areas = np.zeros(len(present), dtype=np.int64)
        status = np.zeros(len(present), dtype=np.int8)
        first_bad = load().rle_areas(
            self.buf,
            np.ascontiguousarray(self.start[present]),
            np.ascontiguousarray(self.length[present]),
            np.ascontiguousarray(self.height[present]),
            np.ascontiguousarray(self.width[present]),
            areas,
            status,
        )
        self.area = np.zeros(len(self.start), dtype=np.int64)
        self.area[present] = areas
        return None if first_bad < 0 else int(present[first_bad])

    def invalid_reason(self, frame: int) -> str:
        """Why one frame's string is not a valid mask (the same words as :func:`rle.decode_counts` where it can)."""
        text = self.counts_text(frame)
        try:
            reason = rle_utils.check_runs(rle_utils.decode_counts(text), (self.height[frame], self.width[frame]))
        except ValueError as err:
            reason = str(err)
        if reason is None:
            status = np.zeros(1, dtype=np.int8)
            load().rle_areas(
                self.buf, self.start[frame : frame + 1], self.length[frame : frame + 1],
                self.height[frame : frame + 1], self.width[frame : frame + 1], np.zeros(1, np.int64), status,
            )  # fmt: skip
            reason = _REASONS.get(int(status[0]), "it cannot be decoded")
        return reason


def build_table(frames: list[list[tuple[int, int, bytes | str] | None]]) -> FrameTable:
    """A table from per-owner frame lists of ``(height, width, counts)`` or None (absent); areas not yet computed.

    Raises:
        ValueError: a counts string is not ASCII (names the owner and frame through the caller's index).
    """
    lengths = [len(owner) for owner in frames]
    flat = [frame for owner in frames for frame in owner]
    present = [f for f in flat if f is not None]
    texts = [c.encode("ascii") if isinstance(c, str) else bytes(c) for _, _, c in present]
    start = np.full(len(flat), -1, dtype=np.int64)
    length = np.zeros(len(flat), dtype=np.int64)
    height = np.zeros(len(flat), dtype=np.int64)
    width = np.zeros(len(flat), dtype=np.int64)
    mask = np.fromiter((f is not None for f in flat), dtype=bool, count=len(flat))
    text_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    start[mask] = np.concatenate([[0], np.cumsum(text_lengths)[:-1]]) if len(texts) else np.zeros(0, np.int64)
    length[mask] = text_lengths
    height[mask] = [h for h, _, _ in present]
    width[mask] = [w for _, w, _ in present]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return FrameTable(b"".join(texts), start, length, height, width, np.zeros(len(flat), np.int64), offsets)
