"""Reading YouTube-VIS JSON files (plain or gzipped) and collecting input problems as warnings or errors.

JSON is parsed with ``orjson`` (about twice as fast as the standard library on annotation files, with the same
values); without it, with the standard ``json`` module and a one-time notice.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

try:
    import orjson
except ImportError:  # a declared dependency; only a hand-made environment lacks it
    orjson = None

_notice_given = False

PathLike = str | os.PathLike[str]


def load_json(path: PathLike, what: str = "JSON file") -> Any:
    """Parse a ``.json`` or ``.json.gz`` file.

    Args:
        path: file to read; a name ending in ``.gz`` (or gzip magic bytes) is decompressed first.
        what: how error messages name the file ("ground-truth file", "results file").

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not (gzipped) JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; pass the path of a YouTube-VIS .json/.json.gz")
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    try:
        data = gzip.decompress(path.read_bytes()) if gzipped else path.read_bytes()
        return _loads(data)
    except (ValueError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:  # orjson.JSONDecodeError too
        raise ValueError(f"{what} {str(path)!r} is not valid JSON{' (gzip)' if gzipped else ''}: {err}") from err


def read_writable(path: PathLike, what: str = "JSON file") -> np.ndarray:
    """The bytes of a file (decompressed if gzipped) in a writable uint8 array, for the compiled readers.

    Raises:
        FileNotFoundError: the file does not exist (worded as :func:`load_json` words it).
        ValueError: the gzip stream is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; pass the path of a YouTube-VIS .json/.json.gz")
    with path.open("rb") as handle:
        # np.empty, not bytearray(size): no zero-filling pass over a file of hundreds of MB before reading it
        buf = np.empty(path.stat().st_size, dtype=np.uint8)
        buf = buf[: handle.readinto(memoryview(buf))]
    if bytes(buf[:2]) == b"\x1f\x8b":
        try:
            buf = np.frombuffer(bytearray(gzip.decompress(buf)), dtype=np.uint8)
        except (OSError, EOFError) as err:
            raise ValueError(f"{what} {str(path)!r} is not valid JSON (gzip): {err}") from err
    return buf


def _loads(data: bytes) -> Any:
    global _notice_given
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as err:
            # The json module also reads NaN / Infinity and integers beyond 64 bits, which orjson rejects; it reads
            # what the official evaluator reads, and words the error when the file really is not JSON.
            logger.debug("orjson could not read the file (%s); retrying with the json module", err)
    elif not _notice_given:
        _notice_given = True
        logger.info("orjson is not installed; reading JSON with the slower standard json module (pip install orjson)")
    return json.loads(data.decode("utf-8"))


def dump_json(data: Any, path: PathLike) -> Path:
    """Write ``data`` as JSON (gzipped when the name ends in ``.gz``), creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            json.dump(data, handle)
    else:
        with path.open("w", encoding="utf-8") as handle:
            json.dump(data, handle)
    return path


class Problems:
    """Collects input problems that the official evaluator accepts silently.

    Each problem is logged as a warning and kept in :attr:`messages`; with ``strict=True`` the first one raises.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.messages: list[str] = []

    def warn(self, message: str) -> None:
        """Record one problem (or raise ValueError in strict mode)."""
        if self.strict:
            raise ValueError(f"{message} (strict mode turns this warning into an error)")
        logger.warning(message)
        self.messages.append(message)
