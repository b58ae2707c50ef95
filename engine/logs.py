"""One way to tell the user what happens: :func:`info` lines on stdout (rank 0 only under DDP, flushed at once, so
logs and pipes see them in order) and :func:`tgs.progress.bar` progress bars on a terminal. Numbers per epoch go
to ``metrics.csv`` and TensorBoard (engine.trainer)."""
from __future__ import annotations

from tgs import progress as _progress


def set_rank(rank: int) -> None:
    """This process's DDP rank: only rank 0 prints and shows bars."""
    _progress.set_rank(rank)


def info(text: str, dist=None) -> None:
    rank = dist.rank if dist is not None else _progress.rank()
    if rank == 0:
        print(text, flush=True)


def progress(iterable=None, dist=None, *, desc: str = "", total: int | None = None, unit: str = "it", **kwargs):
    """:func:`tgs.progress.bar` (``dist`` is accepted for symmetry with :func:`info`; the rank is process-wide)."""
    return _progress.bar(iterable, desc=desc, total=total, unit=unit, **kwargs)
