"""Process-wide CPU settings shared by train.py, swa.py and test.py.

:func:`keep_heap` stops glibc's malloc from handing large freed blocks back to the kernel. By default glibc
serves blocks above a (dynamic, initially 128 KiB) threshold with fresh ``mmap`` calls and trims the top of the
heap once 128 KiB+ is free, so every activation tensor of a CPU forward pass is new memory the kernel must map
and zero page by page. On the CPU that is most of the difference between a short-lived process and a warm
one: ``test.py`` predicting 18000 images with the benchmark's small UNet (1 thread, flip TTA) took 120.3 s with
glibc's defaults and 91.9 s with these settings (``bench/bench_test.py --glibc-defaults``). The cost is
that the process keeps its peak heap until it exits, which batch jobs such as these scripts do anyway.

It does nothing where malloc is not glibc's, when ``TGS_MALLOC=default`` is set, or when the user already set
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` (their settings win). jemalloc or tcmalloc through
``LD_PRELOAD`` are alternatives that need no code.
"""
from __future__ import annotations

import ctypes
import functools
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): 32 MiB
MMAP_THRESHOLD = 32 * 1024 * 1024
# mallopt takes an int: INT_MAX (2 GiB of free heap top before a trim) is the largest value it can be given
TRIM_THRESHOLD = 2**31 - 1


def _mallopt():
    """glibc's ``mallopt`` from the running process's own symbols (None elsewhere: macOS, musl, Windows)."""
    if not (os.name == "posix" and os.uname().sysname == "Linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), "mallopt", None)
    except OSError:
        return None


@functools.cache
def keep_heap() -> bool:
    """Apply the settings above once per process; True when they are in force (now or already)."""
    if os.environ.get("TGS_MALLOC", "").lower() == "default" or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok


def setup_cpu(threads: int = 0) -> None:
    """What train.py, swa.py and test.py do first: torch's intra-op CPU threads (0: torch's default) and
    :func:`keep_heap`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    keep_heap()
