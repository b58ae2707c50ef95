"""The competition metric: mean over images of the precision at IoU thresholds 0.50, 0.55, ..., 0.95.

Each image holds at most one object (its salt), so for one image and one threshold t:

- empty truth: 1 if the prediction is empty, else 0;
- non-empty truth: 1 if IoU(prediction, truth) > t (strictly), else 0 (an empty prediction has IoU 0).

The image's precision is the mean over the ten thresholds, and the score is the mean over images. The threshold
test is done in integers, ``20 * intersection > k * union`` for t = k / 20, so an IoU exactly equal to a
threshold never passes because of floating-point rounding. Everything is vectorised over the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLD_NUMERATORS = np.arange(10, 20)  # t = k / 20
THRESHOLDS = THRESHOLD_NUMERATORS / 20.0


def _flat(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    return masks.reshape(masks.shape[0], -1).astype(bool, copy=False)


def intersection_union(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel counts of intersection and union, shape (N,) each (int64)."""
    p, t = _flat(pred), _flat(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    inter = np.count_nonzero(p & t, axis=1)
    union = np.count_nonzero(p | t, axis=1)
    return inter, union


def hits(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """(N, 10) bool: does each image count as a hit at each threshold, from its intersection and union."""
    inter = np.asarray(inter, dtype=np.int64)[:, None]
    union = np.asarray(union, dtype=np.int64)[:, None]
    both_empty = union == 0  # empty truth and empty prediction
    return both_empty | (20 * inter > THRESHOLD_NUMERATORS[None, :] * union)


def iou(pred, truth) -> np.ndarray:
    """Per-image IoU; 1.0 where both masks are empty."""
    inter, union = intersection_union(pred, truth)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def image_scores(pred, truth) -> np.ndarray:
    """Per-image precision averaged over the thresholds, shape (N,)."""
    return hits(*intersection_union(pred, truth)).mean(axis=1)


def score(pred, truth) -> float:
    """The competition score of a batch of predicted masks against the true masks."""
    s = image_scores(pred, truth)
    return float(s.mean()) if s.size else float("nan")


@dataclass
class Report:
    """A summary of a scored set of images."""

    score: float
    count: int
    empty_count: int
    empty_score: float  # mean over images with empty truth (nan if none)
    nonempty_score: float  # mean over images with salt (nan if none)
    per_threshold: np.ndarray  # (10,) precision at each threshold
    per_image: np.ndarray  # (N,) image scores
    per_image_iou: np.ndarray  # (N,)

    def lines(self) -> list[str]:
        out = [
            f"score         {self.score:.6f}",
            f"images        {self.count}",
            f"empty truth   {self.empty_count:6d} images  score {_fmt(self.empty_score)}",
            f"salt truth    {self.count - self.empty_count:6d} images  score {_fmt(self.nonempty_score)}",
            "precision per IoU threshold:",
        ]
        out += [f"  IoU > {t:.2f}  {p:.6f}" for t, p in zip(THRESHOLDS, self.per_threshold)]
        return out


def _fmt(x: float) -> str:
    return "n/a" if np.isnan(x) else f"{x:.6f}"


class SaltEvaluator:
    """Accumulates predictions batch by batch (``reset`` / ``process`` / ``evaluate``) and reports the metric.

    Only per-image intersection and union counts are kept, so memory does not grow with image size.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._inter: list[np.ndarray] = []
        self._union: list[np.ndarray] = []
        self._truth_area: list[np.ndarray] = []

    def process(self, pred, truth) -> None:
        inter, union = intersection_union(pred, truth)
        self._inter.append(inter)
        self._union.append(union)
        self._truth_area.append(np.count_nonzero(_flat(truth), axis=1))

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image (intersection, union, truth area) so far, in order: what distributed evaluation gathers
        from every rank before :func:`summarize`."""
        return tuple(np.concatenate(x) if x else np.zeros(0, np.int64)
                     for x in (self._inter, self._union, self._truth_area))

    def evaluate(self) -> Report:
        return summarize(*self.counts())


def summarize(inter: np.ndarray, union: np.ndarray, truth_area: np.ndarray) -> Report:
    h = hits(inter, union)
    per_image = h.mean(axis=1) if h.size else np.zeros(0)
    empty = truth_area == 0
    with np.errstate(invalid="ignore"):
        return Report(
            score=float(per_image.mean()) if per_image.size else float("nan"),
            count=int(per_image.size),
            empty_count=int(empty.sum()),
            empty_score=float(per_image[empty].mean()) if empty.any() else float("nan"),
            nonempty_score=float(per_image[~empty].mean()) if (~empty).any() else float("nan"),
            per_threshold=h.mean(axis=0) if h.size else np.full(len(THRESHOLDS), np.nan),
            per_image=per_image,
            per_image_iou=np.where(union == 0, 1.0, inter / np.maximum(union, 1)),
        )


def report(pred, truth) -> Report:
    """Score a whole set at once; see :class:`Report`."""
    ev = SaltEvaluator()
    ev.process(pred, truth)
    return ev.evaluate()
