"""runtime.keep_freed_memory: large freed blocks are reused without new page faults (checked in a child process,
because the setting is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
from seqformer.model.runtime import keep_freed_memory
keep = sys.argv[1] == "1"
if keep:
    assert keep_freed_memory()
def faults(numel):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(numel).fill_(1.0)  # freed at once
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(16 * 2**20)  # 64 MB
print(faults(12 * 2**20))  # 48 MB: fits in the freed 64 MB block
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_makes_a_later_large_tensor_reuse_mapped_pages():
    def faults(keep: str) -> int:
        out = subprocess.run([sys.executable, "-c", CHILD, keep], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    default, kept = faults("0"), faults("1")
    assert default > 10_000  # 12288 4-KiB pages faulted in (glibc unmapped the 64 MB block and maps a new one)
    assert kept < 1_000  # served from the freed block, whose pages are still mapped
