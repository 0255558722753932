"""Process-level CPU settings that make SeqFormer faster without changing any value it computes.

glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh ``mmap`` and
returns it with ``munmap`` when freed. SeqFormer's CPU forward and backward create many tensors of 26-104 MB (the
R50 encoder on a 5-frame 360x640 clip works on ``[25500, 256]`` and ``[25500, 1024]`` matrices), so every such
tensor is faulted in page by page on its first write: filling a fresh 104 MB tensor took 103 ms on the 2-core
development machine, refilling a reused one 13 ms. :func:`keep_freed_memory` tells glibc to serve large blocks
from its heap and to keep freed memory for reuse, so after the first step most pages are already mapped. Measured
there (``benchmarks/model.py``, load ~3): R50 inference of a 5-frame 360x640 clip 6.0 -> 3.6 s wall (8.7 -> 7.1
CPU-s), training step 16.8 -> 14.2 s wall (27.2 -> 25.5 CPU-s).

Limits: PyTorch asks for 64-byte aligned blocks (``posix_memalign``), which glibc serves by carving a slightly
larger block, so a freed block is reused at once by smaller requests but by one of exactly its size only when its
small neighbours are free too; otherwise the heap grows. Freed memory stays with the process, so the resident size
stays at its high-water mark, and that can lie above the default allocator's peak (R50 training step on a 5-frame
360x640 clip, second timed step: 7.2 GB against 6.8 GB). It is a process-wide setting, so only applications call it (the
benchmarks, the platform's CPU predictor for ``seqformer infer`` and the demo), never the model itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping large blocks (see the module docstring).

    Sets ``mallopt(M_MMAP_MAX, 0)`` (large blocks come from the heap) and ``mallopt(M_TRIM_THRESHOLD, 2**62)`` (the
    heap is never shrunk). Call it once, early; it affects allocations made after the call.

    Returns:
        True if the settings were applied, False where the C library is not glibc (nothing is changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("keep_freed_memory: %s has no mallopt (not glibc); allocator left as it is", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # M_TRIM_THRESHOLD takes an int: 2**31 - 1 bytes of free heap top are kept (more is never free at once here)
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        logger.warning("keep_freed_memory: mallopt refused the settings; allocator left as it is")
    return ok


__all__ = ["keep_freed_memory"]
