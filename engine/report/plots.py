"""Drawing the report's numbers (:mod:`engine.report.stats`) with matplotlib's object API: ``Figure`` on the Agg
canvas (no pyplot state, no display needed, importing this module changes no backend); PNGs and CSVs are written
atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg  # figures render on Agg whatever pyplot's backend
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from engine.report.stats import BestEpochs, PixelCurves, SampleGroup, ThresholdSweep
from tgs.io import atomic_open, atomic_path
from tgs.probabilities import LEVELS, SCALE, level_of


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
