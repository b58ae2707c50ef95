"""Is a held-out gain credible, or noise? The rule that decides whether a searched setting (or mosaic rule) is kept.

A nested search (:mod:`tgs.search`, :func:`tgs.mosaic_rules.search_rules`) scores every out-of-fold image with what
was chosen without that image's fold; its held-out gain is the mean, over the images, of the change of each image's
score against the defaults. A positive mean is not enough: a grid of thousands of settings chosen on a few hundred
images finds a positive held-out gain on one fold and a negative one on the next about as often as not. The gain is
*credible* when all three checks hold (:func:`judge`):

1. **size**: the gain is at least :data:`MIN_GAIN` (a change smaller than this is not worth a setting);
2. **folds agree**: the gain exceeds the spread between the folds' own held-out gains, measured as their standard
   error (``std / sqrt(K)``). With two folds this is exactly "the gain is positive in both folds"; with many folds
   it tolerates a fold that is slightly negative by chance;
3. **paired test**: a one-sided sign-flip permutation test on the per-image score differences
   (:func:`sign_flip_p`): under the null hypothesis that the change helps and hurts alike, each image's difference is
   as likely with either sign; the p-value is the share of sign flips whose summed difference is at least the
   observed one. It must be below :data:`ALPHA`. The test is on the quantity reported (the mean gain), uses every
   out-of-fold image (images the change leaves alone add nothing either way), and is exact when few images change
   (all the sign flips are enumerated); otherwise it draws :data:`RESAMPLES` flips with a fixed seed, so the same
   inputs give the same verdict.

The verdict (:class:`Verdict`) says which check decided and why, in words that score.py prints and postprocess.json
records.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_GAIN = 0.001  # the smallest held-out gain (mean image score) a setting or a rule is kept for
ALPHA = 0.05  # the paired test's one-sided significance level
RESAMPLES = 9999  # sign flips drawn when there are too many to enumerate
SEED = 0  # the flips' seed: a verdict is a function of its inputs
EXACT = 13  # up to this many changed images every sign pattern is counted (2 ** 13 = 8192)
_BLOCK = 1000  # sign patterns per block


@dataclass(frozen=True)
class Verdict:
    """The credibility of one held-out gain (see the module docstring)."""

    gain: float  # the nested held-out gain: the mean per-image score difference
    fold_gains: tuple  # each fold's held-out gain (mean over its images)
    spread: float  # the standard error of the fold gains (NaN with fewer than two folds)
    p_value: float  # the one-sided sign-flip test on the per-image differences
    images: int  # out-of-fold images
    changed: int  # images whose score changed
    credible: bool
    why: str  # which check decided, in words

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fold_gains"] = [round(float(g), 6) for g in self.fold_gains]
        for key in ("gain", "spread", "p_value"):
            out[key] = None if np.isnan(out[key]) else round(float(out[key]), 6)
        return out


def sign_flip_p(diffs: np.ndarray) -> float:
    """The one-sided p-value of a paired sign-flip permutation test that the mean of ``diffs`` is above 0: the share
    of sign patterns whose sum is at least the observed one (1.0 when nothing changed). Zero differences are left
    out (their sign does not change a sum). Exact (every pattern) up to :data:`EXACT` changed images; else
    :data:`RESAMPLES` random patterns with a fixed seed, counted as scipy's ``permutation_test`` counts them
    (``(hits + 1) / (RESAMPLES + 1)``). Written out rather than calling scipy's ``permutation_test``, which
    computes the same p-value some twenty times slower through its generic resampling."""
    d = np.asarray(diffs, np.float64)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    observed = d.sum() - 1e-9 * np.abs(d).sum()  # sums equal up to rounding count as reaching it
    if d.size <= EXACT:
        patterns = (np.arange(2 ** d.size)[:, None] >> np.arange(d.size)[None, :]) & 1
        return float(((1 - 2 * patterns) @ d >= observed).mean())
    rng = np.random.default_rng(SEED)
    hits = 0
    for first in range(0, RESAMPLES, _BLOCK):  # blocks of patterns: memory bounded whatever the images
        signs = 1 - 2 * rng.integers(0, 2, (min(_BLOCK, RESAMPLES - first), d.size), dtype=np.int8)
        hits += int((signs @ d >= observed).sum())
    return (hits + 1) / (RESAMPLES + 1)


def fold_spread(fold_gains) -> float:
    """The standard error of the folds' held-out gains (``std(ddof=1) / sqrt(K)``; NaN with fewer than two)."""
    g = np.asarray(fold_gains, np.float64)
    return float(g.std(ddof=1) / np.sqrt(len(g))) if len(g) >= 2 else float("nan")


def judge(diffs: np.ndarray, groups: np.ndarray, min_gain: float = MIN_GAIN, alpha: float = ALPHA) -> Verdict:
    """The verdict on a held-out gain from the per-image score differences ``diffs`` (N,) (each image's score with
    what was chosen without its fold, minus its score with the defaults) and each image's fold ``groups`` (N,)."""
    d = np.asarray(diffs, np.float64)
    groups = np.asarray(groups)
    if d.size == 0:
        return Verdict(float("nan"), (), float("nan"), 1.0, 0, 0, False, "no out-of-fold image: nothing to judge")
    folds = np.unique(groups)
    fold_gains = tuple(float(d[groups == k].mean()) for k in folds)
    gain, spread = float(d.mean()), fold_spread(fold_gains)
    p = sign_flip_p(d)
    changed = int(np.count_nonzero(d))
    listed = (", ".join(f"{g:+.6f}" for g in fold_gains) if len(fold_gains) <= 4 else
              f"{len(fold_gains)} folds, from {min(fold_gains):+.6f} to {max(fold_gains):+.6f}")
    checks = [  # (passed, what it says when it passes, when it fails)
        (gain >= min_gain, f"gain {gain:+.6f} >= the minimum {min_gain:g}",
         f"gain {gain:+.6f} is below the minimum {min_gain:g}"),
        (len(folds) >= 2 and gain > spread,
         f"above the spread between folds {spread:.6f} (fold gains {listed})",
         (f"the folds disagree: the gain is not above the spread between them {spread:.6f} (fold gains {listed})"
          if min(fold_gains) < 0 < max(fold_gains) else
          f"the gain is not above the spread between the folds {spread:.6f} (fold gains {listed})")
         if len(folds) >= 2 else "one fold only: no spread between folds to compare with"),
        (p < alpha, f"paired sign-flip test over {d.size} images ({changed} changed): p = {p:.4f} < {alpha:g}",
         f"paired sign-flip test over {d.size} images ({changed} changed): p = {p:.4f}, not below {alpha:g}"),
    ]
    failed = [fail for ok, _, fail in checks if not ok]
    credible = not failed
    why = ("credible: " + "; ".join(ok_text for _, ok_text, _ in checks) if credible
           else "not credible: " + "; ".join(failed))
    return Verdict(gain, fold_gains, spread, p, int(d.size), changed, credible, why)
