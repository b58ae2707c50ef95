"""Reports of a training run or of saved probabilities: the numbers first (dataclasses, DataFrames), then PNGs.

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

The ``plot_*`` functions draw those results with matplotlib's object API (``Figure`` on the Agg canvas: no pyplot
state, no display needed, importing this module changes no backend) and write PNGs atomically.
:func:`report_run` and :func:`report_probabilities` are what ``report.py`` runs: they find the inputs, write PNGs
and CSVs and return an :class:`Outcome` (summary lines, files written, parts skipped).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg  # figures render on Agg whatever pyplot's backend
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tgs import metric
from tgs.errors import DataError, UserError, few
from tgs.io import atomic_open, atomic_path
from tgs.probabilities import LEVELS, SCALE, at_least, level_histograms, level_of, quantize

#: threshold of cut k (k = 0..256): prob > THRESHOLDS[k]  <=>  q >= k
THRESHOLDS = (np.arange(LEVELS + 1) - 0.5) / SCALE
#: (name, lower, upper) of the coverage bins: salt pixels / all pixels in [lower, upper); "empty" is exactly 0
COVERAGE_BINS = (("empty", 0.0, 0.0), ("<1%", 0.0, 0.01), ("1-10%", 0.01, 0.10), ("10-50%", 0.10, 0.50),
                 (">50%", 0.50, 1.0))


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
def coverage_bin(truth) -> np.ndarray:
    """Index into :data:`COVERAGE_BINS` of each true mask, (N,) int."""
    truth = np.asarray(truth)
    coverage = truth.reshape(len(truth), -1).mean(axis=1)
    edges = [lo for _, lo, _ in COVERAGE_BINS[2:]]  # 0.01, 0.10, 0.50
    return np.where(coverage == 0, 0, 1 + np.searchsorted(edges, coverage, side="right"))


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


# -- drawing ------------------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a figure as PNG atomically (temporary file in the same folder, then renamed)."""
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    with atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False, float_format="%.6g")
    return Path(path)


def plot_learning_curves(df: pd.DataFrame, best: BestEpochs, path, title: str = "") -> Path:
    """Loss (train, validation), validation metrics and learning rate per epoch; the best epochs marked."""
    fig = Figure(figsize=(8, 9), layout="constrained")
    ax_loss, ax_metric, ax_lr = fig.subplots(3, 1, sharex=True)
    x = df["epoch"]
    style = dict(marker="o", markersize=3)  # a single epoch still shows
    for col, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        if col in df:
            ax_loss.plot(x, df[col], label=label, **style)
    for col, label, kw in (("val_metric", "validation metric", dict(linewidth=2)),
                           ("val_empty_score", "empty-mask images", dict(linestyle="--", linewidth=1)),
                           ("val_salt_score", "salt images", dict(linestyle="--", linewidth=1)),
                           ("val_accuracy", "pixel accuracy", dict(linestyle=":", linewidth=1))):
        if col in df and df[col].notna().any():
            ax_metric.plot(x, df[col], label=label, **style, **kw)
    if "lr" in df:
        ax_lr.plot(x, df["lr"], color="tab:purple", **style)
        if (df["lr"] > 0).all():
            ax_lr.set_yscale("log")
    if best.metric_epoch is not None:
        for ax in (ax_loss, ax_metric, ax_lr):
            ax.axvline(best.metric_epoch, color="tab:green", linestyle=":", linewidth=1)
        ax_metric.plot([best.metric_epoch], [best.metric], "*", color="tab:green", markersize=14,
                       label=f"best metric {best.metric:.4f} (epoch {best.metric_epoch})")
    if best.loss_epoch is not None:
        ax_loss.plot([best.loss_epoch], [best.loss], "*", color="tab:red", markersize=14,
                     label=f"best validation loss {best.loss:.4f} (epoch {best.loss_epoch})")
    ax_loss.set_ylabel("loss")
    ax_metric.set_ylabel("competition metric")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_metric, ax_lr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"learning curves ({best.epochs} epochs)")
    return save_figure(fig, path)


def _overlay(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB picture of a prediction against the truth: white hit, red false salt, blue missed salt."""
    rgb = np.zeros(pred.shape + (3,), np.float32)
    rgb[pred & truth] = (1.0, 1.0, 1.0)
    rgb[pred & ~truth] = (0.9, 0.15, 0.15)
    rgb[~pred & truth] = (0.2, 0.45, 1.0)
    return rgb


def plot_samples(images: np.ndarray | None, truth: np.ndarray, q: np.ndarray, table: pd.DataFrame,
                 groups: Sequence[SampleGroup], threshold: float, path, title: str = "") -> Path:
    """One row per sample: image, true mask, probability, prediction vs truth; the row named by group, id,
    score and IoU."""
    rows = [(g.name, rank, int(i)) for g in groups for rank, i in enumerate(g.index, 1)]
    cols = ("image", "true mask", "probability", f"prob > {threshold:.2f}: hit / false / missed")
    fig = Figure(figsize=(4 * 2.0, max(1, len(rows)) * 2.0 + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(max(1, len(rows)), 4, squeeze=False))
    cut = level_of(threshold)
    for r, (name, rank, i) in enumerate(rows):
        row = table.iloc[i]
        panels = (images[i] if images is not None else None, truth[i], q[i] / SCALE,
                  _overlay(q[i] >= cut, truth[i].astype(bool)))
        for c, (ax, pic) in enumerate(zip(axes[r], panels)):
            if pic is None:
                ax.text(0.5, 0.5, "image not found", ha="center", va="center", fontsize=8)
            elif c == 3:
                ax.imshow(pic, interpolation="nearest")
            else:
                ax.imshow(pic, cmap="gray" if c < 2 else "viridis", vmin=0, vmax=255 if c == 0 else 1,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[r][0].set_ylabel(f"{name} {rank}\n{row['id']}\nscore {row['score']:.2f} IoU {row['iou']:.2f}\n"
                              f"coverage {row['coverage']:.1%}", fontsize=8)
    if not rows:
        for ax in axes.ravel():
            ax.set_axis_off()
    fig.suptitle(title or "validation samples: worst, best, random")
    return save_figure(fig, path, dpi=80)


def plot_thresholds(curves: PixelCurves, sweep: ThresholdSweep, threshold: float, path, title: str = "") -> Path:
    """ROC and precision-recall of salt pixels and the metric over the same thresholds, the best marked."""
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    ax_roc, ax_pr, ax_sw = fig.subplots(1, 3)
    marks = ((level_of(threshold), f"prob > {threshold:.2f}", "tab:orange", "o"),
             (sweep.best_index, f"best prob > {sweep.best_threshold:.3f}", "tab:green", "*"))
    ax_roc.plot(curves.fpr, curves.tpr, color="tab:blue", label=f"AUC {curves.roc_auc:.4f}")
    ax_roc.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax_roc.set_xlabel("false-positive rate (background pixels)")
    ax_roc.set_ylabel("true-positive rate (salt pixels)")
    ax_roc.set_title("ROC of salt pixels")
    precision = curves.precision
    ax_pr.step(curves.recall, precision, where="post", color="tab:blue",
               label=f"average precision {curves.average_precision:.4f}")
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_title("precision-recall of salt pixels")
    inside = slice(1, LEVELS)  # thresholds within [0, 1]
    ax_sw.plot(sweep.thresholds[inside], sweep.score[inside], color="tab:blue", linewidth=2, label="all images")
    ax_sw.plot(sweep.thresholds[inside], sweep.empty_score[inside], color="tab:gray", linestyle="--",
               linewidth=1, label="empty-mask images")
    ax_sw.plot(sweep.thresholds[inside], sweep.salt_score[inside], color="tab:brown", linestyle="--",
               linewidth=1, label="salt images")
    ax_sw.set_xlabel("probability threshold")
    ax_sw.set_ylabel("competition metric")
    ax_sw.set_title("competition metric over thresholds")
    for k, label, colour, marker in marks:
        ax_roc.plot(curves.fpr[k], curves.tpr[k], marker, color=colour, markersize=10, label=label)
        ax_pr.plot(curves.recall[k], precision[k], marker, color=colour, markersize=10, label=label)
        ax_sw.axvline(sweep.thresholds[k], color=colour, linestyle=":", linewidth=1)
        ax_sw.plot(sweep.thresholds[k], sweep.score[k], marker, color=colour, markersize=10,
                   label=f"{label}: {sweep.score[k]:.4f}")
    for ax in (ax_roc, ax_pr, ax_sw):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is not ax_roc else "lower right")
    fig.suptitle(title or f"thresholds ({sweep.count} images)")
    return save_figure(fig, path)


def plot_coverage(table: pd.DataFrame, path, threshold: float, best_threshold: float | None = None,
                  title: str = "") -> Path:
    """Bars of the metric by coverage bin (at ``threshold`` and, if given, the best threshold), counts shown."""
    bins = table[table["bin"] != "all"].reset_index(drop=True)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(bins))
    series = [("score", f"prob > {threshold:.2f}", "tab:blue")]
    if best_threshold is not None and "score_best" in bins:
        series.append(("score_best", f"best prob > {best_threshold:.3f}", "tab:green"))
    width = 0.8 / len(series)
    for j, (col, label, colour) in enumerate(series):
        values = bins[col].to_numpy(dtype=float)
        at = x + (j - (len(series) - 1) / 2) * width
        ax.bar(at, np.nan_to_num(values), width, label=label, color=colour)
        for xi, v in zip(at, values):
            if np.isfinite(v):
                ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    for i, row in bins.iterrows():
        count = int(row["images"])
        ax.text(i, 1.06, f"{count} image{'s' if count != 1 else ''}" if count else "no images", ha="center",
                va="bottom", fontsize=8)
    ax.set_xticks(x, bins["bin"])
    ax.set_ylim(0, 1.14)
    ax.set_xlabel("true salt coverage of the image")
    ax.set_ylabel("competition metric")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title or "competition metric by mask coverage")
    return save_figure(fig, path)


# -- one validation set, every report ---------------------------------------------------------------------------
@dataclass
class Validation:
    """Predictions of images with known masks: what the validation part of a report is made of."""

    ids: np.ndarray  # (N,) str
    q: np.ndarray  # (N, H, W) uint8 probability levels
    truth: np.ndarray  # (N, H, W) bool
    images: np.ndarray | None  # (N, H, W) uint8, None if not found
    source: str  # where the predictions come from (for the summary)


@dataclass
class Outcome:
    """What a report did: summary lines, files written, parts skipped (with the reason)."""

    lines: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = list(self.lines)
        if self.written:
            out += ["wrote:"] + [f"  {p}" for p in self.written]
        out += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(out)


def format_table(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["lower", "upper"])
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def report_validation(v: Validation, out_dir: Path, prefix: str, threshold: float = 0.5, samples: int = 6,
                      seed: int = 0, outcome: Outcome | None = None, notes: Sequence[str] = ()) -> Outcome:
    """Threshold curves, coverage bins, sample grid and their CSVs for one validation set, files named
    ``out_dir/PREFIX-*``; summary lines added to ``outcome`` (``notes`` after the metric at the threshold)."""
    outcome = outcome or Outcome()
    if len(v.ids) == 0:
        raise UserError(f"{v.source}: no images to report on")
    hist = image_histograms(v.q, v.truth)
    curves, sweep = pixel_curves(v.q, v.truth, hist), threshold_sweep(v.q, v.truth, hist)
    table_images = per_image(v.ids, v.q, v.truth, threshold)
    best_images = per_image(v.ids, v.q, v.truth, sweep.best_threshold)
    table = coverage_table(table_images)
    table["score_best"] = coverage_table(best_images)["score"]
    groups = select_samples(table_images, samples, seed)
    frame = curves.frame().merge(sweep.frame(), on="threshold")
    shown = pd.concat([table_images.iloc[g.index].assign(group=g.name, rank=np.arange(1, len(g.index) + 1))
                       for g in groups])[["group", "rank", "id", "score", "iou", "coverage", "pred_area"]]
    name = (lambda s: out_dir / f"{prefix}-{s}")
    w = outcome.written
    w.append(plot_thresholds(curves, sweep, threshold, name("thresholds.png"),
                             f"{v.source}: {len(v.ids)} images"))
    w.append(write_csv(frame, name("threshold-sweep.csv")))
    w.append(plot_coverage(table, name("coverage.png"), threshold, sweep.best_threshold,
                           f"{v.source}: metric by mask coverage"))
    w.append(write_csv(table, name("coverage-bins.csv")))
    if samples > 0:
        w.append(plot_samples(v.images, v.truth, v.q, table_images, groups, threshold, name("samples.png"),
                              f"{v.source}: worst, best and random (seed {seed}) images"))
        w.append(write_csv(shown, name("samples.csv")))
    else:
        outcome.skipped.append("the sample grid (--samples 0)")
    w.append(write_csv(table_images.assign(score_best=best_images["score"]), name("per-image.csv")))
    outcome.lines += [
        f"validation: {len(v.ids)} images, {v.source}",
        f"  metric at threshold {threshold:.2f}: {sweep.at(threshold):.4f}",
        *notes,
        f"  best threshold {sweep.best_threshold:.3f} (prob > {sweep.best_threshold:.3f}): {sweep.best_score:.4f}",
        f"  salt pixels: ROC AUC {curves.roc_auc:.4f}, average precision {curves.average_precision:.4f}",
        f"metric by mask coverage (score at {threshold:.2f}, score_best at {sweep.best_threshold:.3f}):",
        *("  " + line for line in format_table(table).splitlines()),
    ]
    if v.images is None and samples > 0:
        outcome.skipped.append("the images column of the sample grid: training images not found (pass --data-dir)")
    return outcome


# -- inputs: saved probabilities --------------------------------------------------------------------------------
def images_folder(truth: Path | None, data_dir: Path | None) -> Path | None:
    """Where the training images of a truth source live: DATA/train/images next to DATA/train.csv or to
    DATA/train/masks, or under --data-dir."""
    from datasets.kaggle import train_images_beside

    if data_dir is not None:
        return Path(data_dir) / "train" / "images"
    return None if truth is None else train_images_beside(truth)


def read_images(folder: Path | None, ids: np.ndarray) -> np.ndarray | None:
    """The images of ``ids`` from a folder of PNGs, or None when the folder lacks any of them."""
    from datasets import kaggle

    if folder is None or not folder.is_dir():
        return None
    found = {p.name[:-4] for p in os.scandir(folder) if p.name.endswith(".png")}
    if not np.isin(ids, list(found)).all():
        return None
    return kaggle.read_pngs(folder, ids, "image")


def align_truth(ids: np.ndarray, truth_ids: np.ndarray, source: str, truth_source: str) -> np.ndarray:
    """Rows of ``truth_ids`` holding each of ``ids``; an id without truth is an error."""
    where = pd.Index(truth_ids).get_indexer(ids)
    if (where < 0).any():
        missing = ids[where < 0]
        raise DataError(f"{source}: {len(missing)} of its {len(ids)} ids have no true mask in {truth_source}: "
                        f"{few(missing, 3)}")
    return where


def validation_from_npz(path: Path, truth: Path | None = None, data_dir: Path | None = None,
                        train=None) -> Validation:
    """A probabilities file against true masks (train.csv, a mask folder, --data-dir, or a loaded TrainSet)."""
    from datasets import kaggle
    from tgs import probabilities

    p = probabilities.load(path)
    source = f"{path} (split {p.split}{', ' + str(len(p.models)) + ' models' if len(p.models) > 1 else ''})"
    if train is not None:
        rows = align_truth(p.ids, train.ids, str(path), f"the training set {data_dir}")
        return Validation(p.ids, as_levels(p.probs), train.masks[rows], train.images[rows], source)
    if truth is None:
        if data_dir is None:
            raise UserError(f"{path}: say where the true masks are: --truth DATA/train.csv (or DATA/train/masks), "
                            "or --data-dir DATA")
        truth = Path(data_dir) / "train.csv"
    truth_ids, masks = kaggle.load_truth(truth)
    rows = align_truth(p.ids, truth_ids, str(path), str(truth))
    masks = masks[rows]
    if masks.shape[1:] != p.probs.shape[1:]:
        raise DataError(f"{path}: probabilities are {p.probs.shape[1:]}, the masks of {truth} {masks.shape[1:]}")
    return Validation(p.ids, as_levels(p.probs), masks, read_images(images_folder(truth, data_dir), p.ids), source)


def output_prefix(npz: Path) -> str:
    """``fold0-valid-probabilities.npz`` -> ``fold0-valid``: the name the report files of a .npz start with."""
    stem = npz.name[:-4] if npz.name.endswith(".npz") else npz.name
    for tail in ("-probabilities", "_probabilities", ".probabilities"):
        if stem.endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def report_probabilities(npz: Path, truth: Path | None = None, data_dir: Path | None = None,
                         out_dir: Path | None = None, threshold: float = 0.5, samples: int = 6,
                         seed: int = 0) -> Outcome:
    """``report.py --probabilities F.npz --truth DATA/train.csv``: the validation report of saved predictions,
    written next to the file (or into ``out_dir``), file names starting with the file's name."""
    npz = Path(npz)
    v = validation_from_npz(npz, truth, data_dir)
    return report_validation(v, Path(out_dir) if out_dir else npz.parent, output_prefix(npz), threshold, samples,
                             seed)


# -- inputs: a run folder ----------------------------------------------------------------------------------------
MODEL_KINDS = ("best-metric", "last")


def _config(run: Path) -> dict:
    import yaml

    path = run / "config.yaml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def find_checkpoint(run: Path, fold: str | None = None) -> Path | None:
    """``models/best-metric-FOLD.pth``, else ``models/last-FOLD.pth`` (the config's fold if several); None if none."""
    for kind in MODEL_KINDS:
        found = sorted((run / "models").glob(f"{kind}-*.pth"))
        if fold is not None and (run / "models" / f"{kind}-{fold}.pth").is_file():
            return run / "models" / f"{kind}-{fold}.pth"
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UserError(f"{run / 'models'} holds {kind} models of several folds ({few((p.name for p in found), 3)}); "
                            "choose one with --checkpoint PATH")
    return None


def find_valid_probabilities(run: Path) -> list[Path]:
    """``*-probabilities.npz`` files in the run folder whose split is ``valid``, newest first."""
    found = []
    for path in run.glob("*-probabilities.npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if "split" in z.files and str(z["split"]) == "valid":
                    found.append(path)
        except (OSError, ValueError, EOFError):
            continue
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def predict_levels(loaded, images: np.ndarray, device, tta: bool | None = None,
                   batch_size: int = 32) -> tuple[np.ndarray, bool]:
    """Run a loaded checkpoint (:func:`models.load`) over uint8 images (N, 101, 101) as test.py does
    (:class:`tgs.inference.Ensemble` of one model): (probability levels uint8 (N, 101, 101), whether flip TTA was
    used; by default as the run validated, its ``--vtf``)."""
    import torch

    from tgs.inference import Ensemble

    if tta is None:
        tta = bool((loaded.meta.get("options") or {}).get("vtf", False))
    ens = Ensemble(len(images))
    ens.add_model(loaded.model, loaded.input_spec, np.ascontiguousarray(images), torch.device(device),
                  batch_size=batch_size, tta=tta)
    return quantize(ens.mean()[0]), tta


def report_run(run: Path, source: str = "auto", checkpoint: Path | None = None, data_dir: Path | None = None,
               folds_file: Path | None = None, out_dir: Path | None = None, threshold: float = 0.5,
               samples: int = 6, seed: int = 0, device: str = "auto", tta: bool | None = None,
               batch_size: int = 32) -> Outcome:
    """``report.py RUN``: learning curves from ``RUN/metrics.csv`` and the validation report of the fold, from the
    run's best model (``source='model'``), from a ``*-probabilities.npz`` of split 'valid' in the run folder
    (``'npz'``), or (``'auto'``) from such a file when it is newer than the model, else the model.

    What is missing is skipped with a note (a run still training may have one epoch and no model yet); a folder
    with neither metrics nor predictions is a UserError that says how to make them.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist (train into it with `python train.py --data-dir DATA "
                        f"--log-dir {run}`)")
    out_dir = Path(out_dir) if out_dir else run
    outcome = Outcome()
    config = _config(run)
    metrics_df = read_metrics(run / "metrics.csv")
    ckpt = Path(checkpoint) if checkpoint else find_checkpoint(run, config.get("data_fold"))
    if checkpoint and not ckpt.is_file():
        raise UserError(f"--checkpoint {ckpt} does not exist")
    npzs = find_valid_probabilities(run) if source in ("auto", "npz") else []
    if source == "npz" and not npzs:
        raise UserError(f"{run}: no *-probabilities.npz with split 'valid' (write one with test.py's --split valid, "
                        "or use --source model)")
    use_npz = npzs[0] if npzs and (source == "npz" or ckpt is None
                                   or npzs[0].stat().st_mtime >= ckpt.stat().st_mtime) else None
    use_model = ckpt if use_npz is None and source in ("auto", "model") else None
    if source == "model" and ckpt is None:
        raise UserError(f"{run}: no models/best-metric-*.pth or models/last-*.pth to predict with (they appear "
                        "after the first epoch of `python train.py --log-dir RUN`)")
    if (metrics_df is None or metrics_df.empty) and use_npz is None and use_model is None:
        raise UserError(
            f"{run} has nothing to report: no metrics.csv rows, no models/best-metric-*.pth or models/last-*.pth, "
            f"no *-probabilities.npz of split 'valid'; train into it with `python train.py --data-dir DATA "
            f"--log-dir {run}` (both appear after the first epoch), or report saved predictions with "
            f"`python report.py --probabilities FILE.npz --truth DATA/train.csv`")

    # the inputs of the validation report, checked before anything is written
    loaded, dev, data = None, None, None
    if use_model is not None:
        import models
        from tgs.distributed import resolve_device

        dev = resolve_device(device)
        loaded = models.load(use_model, device=dev)
    if use_npz is not None or use_model is not None:
        stored = (loaded.meta if loaded else {}).get("data_dir") or config.get("data_dir")
        data = Path(data_dir) if data_dir else (Path(stored) if stored else None)
        if data is None:
            raise UserError(f"{run}: the run does not say where its data is; pass --data-dir DATA")
        if not data.is_dir():
            if data_dir:
                raise UserError(f"--data-dir {data} does not exist")
            raise UserError(f"data folder {data} (from {use_model or run / 'config.yaml'}) does not exist; "
                            "pass --data-dir DATA")

    # learning curves
    if metrics_df is None:
        outcome.skipped.append(f"learning curves: {run / 'metrics.csv'} does not exist")
    elif metrics_df.empty:
        outcome.skipped.append(f"learning curves: {run / 'metrics.csv'} has no epochs yet")
    else:
        best = best_epochs(metrics_df)
        outcome.written.append(plot_learning_curves(metrics_df, best, out_dir / "learning-curves.png",
                                                    f"{run}: {best.epochs} epochs"))
        outcome.lines.append(f"run {run}: {best.epochs} epochs (last {best.last_epoch})")
        if best.metric_epoch is not None:
            loss = (f"; best validation loss {best.loss:.4f} at epoch {best.loss_epoch}"
                    if best.loss_epoch is not None else "")
            outcome.lines.append(f"  best epoch {best.metric_epoch}: validation metric {best.metric:.4f}{loss}")

    # validation predictions
    if data is None:
        outcome.skipped.append(f"validation plots: no models/best-metric-*.pth or models/last-*.pth in {run} and no "
                               "*-probabilities.npz of split 'valid' yet (a model appears after the first epoch)")
        return outcome
    from datasets import folds, kaggle

    notes = []
    if npzs and use_npz is None:
        outcome.lines.append(f"ignored {npzs[0].name}: older than {ckpt.name} (--source npz uses it)")
    train = kaggle.load_train(data)
    if use_npz is not None:
        v = validation_from_npz(use_npz, data_dir=data, train=train)
        if len(npzs) > 1:
            outcome.lines.append(f"(the newest of {len(npzs)} validation probability files: "
                                 f"{few((p.name for p in npzs), 3)})")
    else:
        meta = loaded.meta
        fold = meta.get("fold") or config.get("data_fold")
        ff = folds_file or meta.get("folds_file") or config.get("folds_file")
        _, rows = folds.split(train.ids, fold, ff)
        q, used_tta = predict_levels(loaded, train.images[rows], dev, tta, batch_size)
        epoch = meta.get("epoch")
        v = Validation(train.ids[rows], q, train.masks[rows], train.images[rows],
                       f"{fold} predicted by {use_model.name} (epoch {epoch}{', flip TTA' if used_tta else ''})")
        own = (meta.get("metrics") or {}).get("val_metric")
        if own is not None:
            notes.append(f"  during training (epoch {epoch}, unquantised probabilities > 0.5): {own:.4f}")
    return report_validation(v, out_dir, "valid", threshold, samples, seed, outcome, notes)
