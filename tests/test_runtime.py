"""tgs.runtime.keep_heap: glibc malloc serves large blocks from its heap instead of fresh mmap calls.

Checked in fresh processes (the settings are process-wide and permanent) through glibc's own accounting:
``mallinfo2().hblkhd`` is the number of bytes currently in mmap-served blocks.
"""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
from tgs import runtime
applied = runtime.keep_heap()
again = runtime.keep_heap()
before = libc.mallinfo2().hblkhd
block = ctypes.create_string_buffer(8 << 20)  # one 8 MiB malloc
print(applied, again, libc.mallinfo2().hblkhd - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")


def probe(**env) -> tuple[bool, bool, int]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TGS_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT,
                         env={**clean, "PYTHONPATH": str(ROOT), **env}, check=True).stdout.split()
    return out[0] == "True", out[1] == "True", int(out[2])


@glibc
def test_keep_heap_serves_large_blocks_from_the_heap():
    applied, again, mmapped = probe()
    assert applied and again
    assert mmapped == 0


@glibc
def test_glibc_default_mmaps_large_blocks_and_can_be_asked_for():
    # the probe sees the difference: with glibc's defaults the same block is mmapped
    applied, again, mmapped = probe(TGS_MALLOC="default")
    assert not applied and not again
    assert mmapped >= 8 << 20


@glibc
def test_users_malloc_environment_wins():
    applied, _, mmapped = probe(MALLOC_MMAP_THRESHOLD_="131072")
    assert not applied
    assert mmapped >= 8 << 20


def test_setup_cpu_sets_threads(monkeypatch):
    import torch

    from tgs import runtime

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(runtime, "keep_heap", lambda: False)  # keep this test process's malloc as it is
    runtime.setup_cpu(3)
    runtime.setup_cpu(0)  # 0: torch's default, untouched
    assert calls == [3]
