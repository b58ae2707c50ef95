"""Benchmarks that print tables (run as `python -m bench.NAME` from the repository root); never asserted in tests."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def dataset(data: str | None, train: int, test: int, seed: int = 0):
    """The dataset folder to measure on: ``data`` when given, else a synthetic set of ``train`` + ``test`` tiles
    written into a temporary folder for the ``with`` block by a separate process (its memory is not counted in the
    benchmark's)."""
    if data is not None:
        yield data
        return
    with tempfile.TemporaryDirectory(prefix="tgs-bench-") as tmp:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "datasets.synthetic", "--out", tmp, "--train", str(train),
                        "--test", str(test), "--seed", str(seed), "--force"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        print(f"generated a synthetic {train} + {test} set in {time.perf_counter() - t:.1f} s")
        yield tmp
