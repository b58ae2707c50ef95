"""Bins of salt coverage (salt pixels / all pixels of a mask): the groups a report scores separately and the
groups the pseudo-label rule caps (:mod:`tgs.pseudo`). One definition for both, on the ground floor."""
from __future__ import annotations

import numpy as np

#: (name, lower, upper) of the coverage bins: salt pixels / all pixels in [lower, upper); "empty" is exactly 0
COVERAGE_BINS = (("empty", 0.0, 0.0), ("<1%", 0.0, 0.01), ("1-10%", 0.01, 0.10), ("10-50%", 0.10, 0.50),
                 (">50%", 0.50, 1.0))
BIN_NAMES = tuple(b[0] for b in COVERAGE_BINS)


def coverage_bin(masks) -> np.ndarray:
    """Index into :data:`COVERAGE_BINS` of each mask (N, H, W), (N,) int."""
    masks = np.asarray(masks)
    coverage = masks.reshape(len(masks), -1).mean(axis=1)
    edges = [lo for _, lo, _ in COVERAGE_BINS[2:]]  # 0.01, 0.10, 0.50
    return np.where(coverage == 0, 0, 1 + np.searchsorted(edges, coverage, side="right"))
