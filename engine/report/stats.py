"""The numbers of a report: per-image and per-threshold statistics of predictions against true masks, and a
run's ``metrics.csv``. Plots are in :mod:`engine.report.plots`, finding inputs and writing files in
:mod:`engine.report.runs`.

Everything works on probabilities quantised to 256 levels, ``q`` uint8 with probability ``q / 255`` (the format
of :mod:`tgs.probabilities`; model outputs are quantised the same way). A probability threshold ``t`` predicts
salt where ``prob > t``, i.e. where ``q >= k`` for the cut ``k`` = the number of levels ``<= t``. So there are
only 257 distinct predictions (``k = 0`` everything salt .. ``k = 256`` nothing), and the sweeps below evaluate
all of them exactly, each shown at the threshold ``(k - 0.5) / 255`` half-way between two levels (``k = 128`` is
exactly 0.5). From one pass of per-image histograms of ``q`` (all pixels, salt pixels):

- :func:`pixel_curves`: ROC and precision-recall of salt pixels: true/false positive counts per cut are reversed
  cumulative sums of the histograms; ROC AUC by the trapezoid rule (equal to the Mann-Whitney statistic, ties
  counted half), average precision as the step sum ``sum (R_k - R_k+1) P_k``;
- :func:`threshold_sweep`: the competition metric (:mod:`tgs.metric`) at every cut, from per-image intersections
  and unions that are again reversed cumulative sums, and the best threshold;
- :func:`per_image` / :func:`coverage_table`: image scores at one threshold and their means by mask coverage
  (empty, <1%, 1-10%, 10-50%, >=50% of the pixels);
- :func:`select_samples`: the worst and best images and a seeded random sample for the picture grid;
- :func:`read_metrics` / :func:`best_epochs`: a run's ``metrics.csv`` and its best epochs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tgs import metric
from tgs.coverage import COVERAGE_BINS, coverage_bin
from tgs.errors import DataError
from tgs.probabilities import LEVELS, SCALE, at_least, level_histograms, level_of, quantize

THRESHOLDS = (np.arange(LEVELS + 1) - 0.5) / SCALE


# -- probabilities and cuts -------------------------------------------------------------------------------------
def as_levels(probs) -> np.ndarray:
    """uint8 levels of probabilities: uint8 passes through, floats in [0, 1] are quantised like the .npz files."""
    probs = np.asarray(probs)
    return quantize(probs)


def _check(q: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q, truth = as_levels(q), np.asarray(truth).astype(bool, copy=False)
    if q.ndim == 2:
        q, truth = q[None], truth[None] if truth.ndim == 2 else truth
    if q.shape != truth.shape or q.ndim != 3:
        raise ValueError(f"probabilities {q.shape} and truth {truth.shape} must both be (N, H, W)")
    return q, truth


def image_histograms(q, truth) -> tuple[np.ndarray, np.ndarray]:
    """Per-image histograms of the levels: (all pixels, salt pixels), each (N, 256) int64
    (:func:`tgs.probabilities.level_histograms` after checking and quantising the inputs)."""
    return level_histograms(*_check(q, truth))


# -- pixel ROC / precision-recall ------------------------------------------------------------------------------
@dataclass
class PixelCurves:
    """Salt-pixel confusion counts at every cut k = 0..256 (predicted salt: ``prob > thresholds[k]``)."""

    thresholds: np.ndarray  # (257,)
    tp: np.ndarray  # (257,) int64 salt pixels predicted salt
    fp: np.ndarray  # (257,) int64 background pixels predicted salt
    positives: int  # salt pixels
    negatives: int  # background pixels

    @property
    def fn(self) -> np.ndarray:
        return self.positives - self.tp

    @property
    def tn(self) -> np.ndarray:
        return self.negatives - self.fp

    @property
    def tpr(self) -> np.ndarray:
        """Recall (true-positive rate); NaN without salt pixels."""
        return self.tp / self.positives if self.positives else np.full(len(self.tp), np.nan)

    recall = tpr

    @property
    def fpr(self) -> np.ndarray:
        return self.fp / self.negatives if self.negatives else np.full(len(self.fp), np.nan)

    @property
    def precision(self) -> np.ndarray:
        """tp / (tp + fp); 1 where nothing is predicted salt (the usual convention for the curve's end)."""
        predicted = self.tp + self.fp
        return np.where(predicted > 0, self.tp / np.maximum(predicted, 1), 1.0)

    @property
    def roc_auc(self) -> float:
        """Area under the ROC curve (trapezoids between the 257 points); NaN if one class is absent."""
        if not (self.positives and self.negatives):
            return float("nan")
        return float(np.trapezoid(self.tpr[::-1], self.fpr[::-1]))

    @property
    def average_precision(self) -> float:
        """``sum_k (recall_k - recall_k+1) * precision_k``: the step area under the precision-recall curve."""
        if not self.positives:
            return float("nan")
        r = self.tpr
        return float(np.sum((r[:-1] - r[1:]) * self.precision[:-1]))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"threshold": self.thresholds, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                             "tn": self.tn, "tpr": self.tpr, "fpr": self.fpr, "precision": self.precision})


def pixel_curves(q, truth, histograms: tuple[np.ndarray, np.ndarray] | None = None) -> PixelCurves:
    """ROC / precision-recall counts of salt pixels over all 257 cuts (``histograms`` from
    :func:`image_histograms` to reuse them)."""
    all_hist, salt_hist = histograms if histograms is not None else image_histograms(q, truth)
    pos = salt_hist.sum(axis=0)
    neg = all_hist.sum(axis=0) - pos
    return PixelCurves(THRESHOLDS.copy(), at_least(pos), at_least(neg), int(pos.sum()), int(neg.sum()))


# -- the competition metric over thresholds ------------------------------------------------------------------
@dataclass
class ThresholdSweep:
    """The competition metric at every cut k = 0..256 (predicted salt: ``prob > thresholds[k]``)."""

    thresholds: np.ndarray  # (257,)
    score: np.ndarray  # (257,) mean image score
    empty_score: np.ndarray  # (257,) mean over images with empty truth (NaN if none)
    salt_score: np.ndarray  # (257,) mean over images with salt (NaN if none)
    count: int

    @property
    def best_index(self) -> int:
        """The cut of the highest score; among equal scores the one closest to 0.5 (the middle of a plateau
        around the default rather than its edge)."""
        best = np.flatnonzero(self.score == np.nanmax(self.score))
        return int(best[np.argmin(np.abs(best - level_of(0.5)))])

    @property
    def best_threshold(self) -> float:
        return float(self.thresholds[self.best_index])

    @property
    def best_score(self) -> float:
        return float(self.score[self.best_index])

    def at(self, threshold: float) -> float:
        """The score of ``prob > threshold``."""
        return float(self.score[level_of(threshold)])

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"threshold": self.thresholds, "score": self.score, "empty_score": self.empty_score,
                             "salt_score": self.salt_score})


def threshold_sweep(q, truth, histograms: tuple[np.ndarray, np.ndarray] | None = None) -> ThresholdSweep:
    """:func:`tgs.metric.hits` for all images at all 257 cuts at once.

    Per image and cut: intersection = salt pixels with ``q >= k``, predicted area = pixels with ``q >= k``
    (reversed cumulative sums of the per-image histograms), union = predicted + true area - intersection.
    """
    all_hist, salt_hist = histograms if histograms is not None else image_histograms(q, truth)
    n = len(all_hist)
    inter = at_least(salt_hist)  # (N, 257)
    area = at_least(all_hist)
    truth_area = salt_hist.sum(axis=1)
    union = area + truth_area[:, None] - inter
    precision = np.zeros(inter.shape, np.float64)
    for k in metric.THRESHOLD_NUMERATORS:  # the same integer test as tgs.metric.hits, ten (N, 257) operations
        precision += (union == 0) | (20 * inter > k * union)
    precision /= len(metric.THRESHOLD_NUMERATORS)
    empty = truth_area == 0
    with np.errstate(invalid="ignore"):
        return ThresholdSweep(
            THRESHOLDS.copy(),
            precision.mean(axis=0) if n else np.full(LEVELS + 1, np.nan),
            precision[empty].mean(axis=0) if empty.any() else np.full(LEVELS + 1, np.nan),
            precision[~empty].mean(axis=0) if (~empty).any() else np.full(LEVELS + 1, np.nan),
            n)


# -- per image, coverage ------------------------------------------------------------------------------------------
def per_image(ids: Sequence[str], q, truth, threshold: float = 0.5) -> pd.DataFrame:
    """One row per image at ``prob > threshold``: id, score, iou (tgs.metric), coverage, bin, true and predicted
    salt areas, the image's highest probability."""
    q, truth = _check(q, truth)
    pred = q >= level_of(threshold)
    inter, union = metric.intersection_union(pred, truth)
    n = len(q)
    pixels = q[0].size if n else 1
    truth_area = truth.reshape(n, -1).sum(axis=1)
    return pd.DataFrame({
        "id": np.asarray(ids, dtype=str),
        "score": metric.hits(inter, union).mean(axis=1),
        "iou": np.where(union == 0, 1.0, inter / np.maximum(union, 1)),
        "coverage": truth_area / pixels,
        "bin": np.asarray([b[0] for b in COVERAGE_BINS])[coverage_bin(truth)],
        "truth_area": truth_area,
        "pred_area": pred.reshape(n, -1).sum(axis=1),
        "max_prob": q.reshape(n, -1).max(axis=1) / SCALE if n else np.zeros(0),
    })


def coverage_table(images: pd.DataFrame) -> pd.DataFrame:
    """Means of a :func:`per_image` frame by coverage bin, every bin listed (NaN where it has no image), and a
    last row ``all``: images, share, score, mean IoU, share of images predicted empty."""
    names = [b[0] for b in COVERAGE_BINS]
    grouped = images.assign(predicted_empty=images["pred_area"] == 0).groupby("bin", sort=False)
    stats = grouped.agg(images=("score", "size"), score=("score", "mean"), iou=("iou", "mean"),
                        predicted_empty=("predicted_empty", "mean")).reindex(names)
    stats["images"] = stats["images"].fillna(0).astype(np.int64)
    total = pd.DataFrame({"images": [len(images)], "score": [images["score"].mean()],
                          "iou": [images["iou"].mean()], "predicted_empty": [(images["pred_area"] == 0).mean()]},
                         index=["all"])
    table = pd.concat([stats, total])
    table.insert(1, "share", table["images"] / max(len(images), 1))
    table.insert(0, "lower", [b[1] for b in COVERAGE_BINS] + [0.0])
    table.insert(1, "upper", [b[2] for b in COVERAGE_BINS] + [1.0])
    return table.rename_axis("bin").reset_index()


@dataclass
class SampleGroup:
    name: str  # worst, best, random
    index: np.ndarray  # rows of the per-image frame, in display order


def select_samples(images: pd.DataFrame, n: int = 6, seed: int = 0) -> list[SampleGroup]:
    """The ``n`` worst images (lowest score, then lowest IoU), the ``n`` best (highest score then IoU, images with
    salt first: an empty mask predicted empty is a perfect but dull case) and ``n`` at random (seeded)."""
    score, iou = images["score"].to_numpy(), images["iou"].to_numpy()
    salt = (images["truth_area"].to_numpy() > 0)
    count = min(n, len(images))
    worst = np.lexsort((iou, score))[:count]
    best = np.lexsort((-iou, -score, ~salt))[:count]
    rng = np.random.default_rng(seed)
    rand = np.sort(rng.choice(len(images), size=count, replace=False)) if count else np.zeros(0, np.int64)
    return [SampleGroup("worst", worst), SampleGroup("best", best), SampleGroup("random", rand)]


# -- a run's metrics.csv ------------------------------------------------------------------------------------------
def read_metrics(path: str | os.PathLike) -> pd.DataFrame | None:
    """A run's ``metrics.csv`` (None if absent; an empty frame if it has no rows yet)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics CSV ({str(exc).splitlines()[0]})") from None
    if len(df) and "epoch" not in df.columns:
        raise DataError(f"{path}: no 'epoch' column (columns: {', '.join(map(str, df.columns))})")
    return df


@dataclass
class BestEpochs:
    """The best epochs of a run as train.py counts them (the first epoch reaching the best value)."""

    epochs: int  # rows in metrics.csv
    last_epoch: int
    metric_epoch: int | None = None
    metric: float = float("nan")
    loss_epoch: int | None = None
    loss: float = float("nan")


def best_epochs(df: pd.DataFrame) -> BestEpochs:
    out = BestEpochs(len(df), int(df["epoch"].iloc[-1]) if len(df) else -1)
    for col, kind, attr in (("val_metric", "max", "metric"), ("val_loss", "min", "loss")):
        if col in df.columns and df[col].notna().any():
            row = getattr(df[col], f"idx{kind}")()
            setattr(out, f"{attr}_epoch", int(df["epoch"].loc[row]))
            setattr(out, attr, float(df[col].loc[row]))
    return out
