"""Logging set-up for every entry point: rank-aware, console output on rank 0 only.

Only this module configures handlers; every other module just does ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

_FORMAT = "%(asctime)s %(levelname)s %(name)s%(rank)s: %(message)s"
_configured = False


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank_text = f" [rank {rank}]" if rank > 0 else ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank_text
        return True


def current_rank() -> int:
    """Best-effort global rank of this process (0 outside distributed runs)."""
    for key in ("RANK", "SEQFORMER_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def setup_logging(level: int | str = "INFO", rank: int | None = None, all_ranks: bool = False) -> None:
    """Configure the ``seqformer`` logger tree once per process.

    Args:
        level: log level name or number for rank 0 (other ranks log warnings and errors only).
        rank: global rank; read from the environment when None.
        all_ranks: log at ``level`` on every rank (debugging distributed runs).
    """
    global _configured
    rank = current_rank() if rank is None else rank
    root = logging.getLogger("seqformer")
    if _configured:
        for handler in root.handlers:
            for flt in handler.filters:
                if isinstance(flt, _RankFilter):
                    flt.rank_text = f" [rank {rank}]" if rank > 0 else ""
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_RankFilter(rank))
        root.addHandler(handler)
        root.propagate = False
        _configured = True
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    root.setLevel(level if (rank == 0 or all_ranks) else logging.WARNING)


def format_seconds(seconds: float) -> str:
    """``3725`` → ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLogger:
    """Logs ``done/total``, rate and ETA at most every ``interval`` seconds (detectron2's log_every_n_seconds).

    Args:
        logger: where to log.
        total: number of units expected (None when unknown).
        what: unit name for the message ("videos", "steps").
        interval: minimum seconds between two lines.
        clock: time source (tests inject a fake one).
    """

    def __init__(
        self,
        logger: logging.Logger,
        total: int | None,
        what: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.total, self.what, self.interval, self.clock = logger, total, what, interval, clock
        self.start = clock()
        self.last = -float("inf")
        self.done = 0

    def eta_seconds(self) -> float | None:
        elapsed = self.clock() - self.start
        if not self.total or self.done <= 0:
            return None
        return elapsed / self.done * max(0, self.total - self.done)

    def update(self, n: int = 1, extra: str = "", force: bool = False) -> None:
        """Count ``n`` more units and log when the interval has passed (or ``force``)."""
        self.done += n
        now = self.clock()
        if not force and now - self.last < self.interval and self.done != self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total}" if self.total else ""
        eta = self.eta_seconds()
        eta_text = f", ETA {format_seconds(eta)}" if eta is not None else ""
        suffix = f", {extra}" if extra else ""
        self.logger.info(
            "%s %d%s (%.2f/s, elapsed %s%s)%s", self.what, self.done, total, rate, format_seconds(elapsed), eta_text,
            suffix,
        )
