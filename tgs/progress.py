"""Progress bars with a time estimate (tqdm) on a terminal, silent in logs, pipes and CI.

:func:`bar` is shown only when stderr is a terminal and this process is DDP rank 0 (:func:`set_rank`); every long
step of the pipeline (data loading, training and validation batches, swa's BatchNorm pass, prediction per model
and over the images, the mosaic build, the ensemble's folds) goes through it, so the rule is the same everywhere.
"""
from __future__ import annotations

import sys

_rank = 0


def set_rank(rank: int) -> None:
    global _rank
    _rank = int(rank)


def rank() -> int:
    return _rank


def interactive() -> bool:
    """True when bars are shown: stderr is a terminal (and this is rank 0)."""
    try:
        return _rank == 0 and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, desc: str = "", total: int | None = None, unit: str = "it", **kwargs):
    """A tqdm bar over ``iterable`` (or a manual one: ``bar.update(n)``; use it as a context manager)."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not interactive(), leave=False,
                dynamic_ncols=True, **kwargs)
