"""The out-of-fold search of the post-processing settings (:class:`tgs.postprocess.PostProcess`), in-sample and
nested, and the credibility rule that decides whether a searched setting is kept (:mod:`tgs.credibility`).

Search (:func:`search`): for every image, a histogram of its quantised probabilities (the 256 levels of the
``.npz`` format) over all pixels and over its true salt pixels gives the predicted area and the intersection at
every threshold at once (reverse cumulative sums, :class:`ImageCounts`); every (threshold, min area, gate, flat)
combination is then scored from those counts with array operations. The scores equal those of
:func:`tgs.postprocess.apply` followed by :mod:`tgs.metric` on the loaded probabilities, exactly.

:func:`grid` keeps those scores per group of images (folds), so :func:`honest_search` gets from the same pass the
nested estimate: each fold scored with the best setting of the other folds. Its held-out gain tells whether a search
generalises. A family of settings (the threshold alone, the full grid) is kept only when its held-out gain is
credible (:func:`tgs.credibility.judge`: large enough, above the spread between folds, and significant in a paired
test over the out-of-fold images); the full grid is preferred to the threshold alone only when its extra gain over
it is credible as well. Otherwise the defaults are kept, and the search says which check decided and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tgs import metric
from tgs.credibility import Verdict, judge
from tgs.errors import UserError
from tgs.postprocess import DEFAULTS, PostProcess
from tgs.probabilities import at_least, level_histograms, level_of, quantize

THRESHOLDS = np.round(np.arange(0.20, 0.801, 0.02), 2)
MIN_AREAS = np.array([0, 5, 10, 15, 20, 30, 40, 60, 80, 100, 150, 200, 300])
GATES = np.round(np.arange(0.05, 0.951, 0.05), 2)
TIE = 1e-9  # summed image scores this close count as equal: the default (or the smaller change) is kept
FAMILIES = {"threshold": "threshold only (min area, gate and flat rule at the defaults)",
            "all": "threshold x min area x gate x flat"}


@dataclass
class ImageCounts:
    """Per image, the predicted area and the intersection with the truth at every probability level, and what the
    other steps read: from these, any setting's image scores are array operations (:meth:`scores`)."""

    area_ge: np.ndarray  # (N, 257) pixels with level >= k
    inter_ge: np.ndarray  # (N, 257) true salt pixels with level >= k
    truth_area: np.ndarray  # (N,)
    image_probs: np.ndarray | None  # (N,) float32 when all are finite (gating searched), else None
    flat: np.ndarray | None  # (N,) bool flat-image flags, None when unknown (the flat rule is not searched)

    @classmethod
    def of(cls, q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None,
           flat: np.ndarray | None = None) -> "ImageCounts":
        q = quantize(np.asarray(q))
        truth = np.asarray(truth, dtype=bool)
        if q.shape != truth.shape:
            raise ValueError(f"probabilities {q.shape} and truth {truth.shape} differ in shape")
        if len(q) == 0:
            raise UserError("no images to search on")
        all_counts, salt_counts = level_histograms(q, truth)
        use_gate = image_probs is not None and bool(np.isfinite(image_probs).all())
        return cls(at_least(all_counts), at_least(salt_counts), salt_counts.sum(axis=1),
                   np.asarray(image_probs, np.float32) if use_gate else None,
                   None if flat is None else np.asarray(flat, dtype=bool))

    def __len__(self) -> int:
        return len(self.truth_area)

    def at(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(area, score kept, change of the score when emptied), each (N,), at ``threshold``."""
        level = level_of(threshold)
        area, inter = self.area_ge[:, level], self.inter_ge[:, level]
        keep = metric.hits(inter, area + self.truth_area - inter).mean(axis=1)
        return area, keep, (self.truth_area == 0).astype(np.float64) - keep  # an emptied image scores 1 on empty truth

    def gated(self, gate: float | None) -> np.ndarray:
        """(N,) bool: the images the gate empties (none when off or when gating is not searched)."""
        if gate is None or self.image_probs is None:
            return np.zeros(len(self), bool)
        return self.image_probs < gate

    def scores(self, setting: PostProcess) -> np.ndarray:
        """(N,) each image's score with ``setting`` (its mosaic rules aside)."""
        area, keep, delta = self.at(setting.threshold)
        drop = (area < setting.min_area) | self.gated(setting.gate)
        if setting.flat and self.flat is not None:
            drop |= self.flat
        return keep + drop * delta


@dataclass
class Grid:
    """Every setting of a search scored on groups of images (e.g. folds): ``sums[t, a, g, f, k]`` is the summed
    image score of setting (thresholds[t], min_areas[a], gates[g], flats[f]) over the images of group k, and
    ``empty`` the number of its predictions that are empty; ``images`` gives any one setting's image scores."""

    thresholds: list
    min_areas: list
    gates: list
    flats: list
    sums: np.ndarray  # (T, A, G, F, K) float64
    empty: np.ndarray  # (T, A, G, F, K) int64
    counts: np.ndarray  # (K,) images per group
    default: tuple  # index of the default setting
    images: ImageCounts | None = None

    def setting(self, idx) -> PostProcess:
        t, a, g, f = idx
        return PostProcess(self.thresholds[t], int(self.min_areas[a]), self.gates[g], self.flats[f])

    def family(self, name: str) -> np.ndarray:
        """(T, A, G, F) bool: the settings of a family of :data:`FAMILIES` ('threshold': min area, gate and flat
        rule at the defaults; 'all': every setting)."""
        shape = self.sums.shape[:4]
        if name == "all":
            return np.ones(shape, bool)
        out = np.zeros(shape, bool)
        out[:, self.default[1], self.default[2], self.default[3]] = True
        return out

    def _total(self, groups) -> np.ndarray:
        return self.sums.sum(axis=-1) if groups is None else self.sums[..., np.asarray(groups, bool)].sum(axis=-1)

    def pick(self, groups=None, family: str = "all") -> tuple:
        """The index of the best setting of ``family`` on ``groups`` ((K,) bool; None: all images); the default
        when it scores as well (within :data:`TIE`)."""
        total = np.where(self.family(family), self._total(groups), -np.inf)
        best = np.unravel_index(int(np.argmax(total)), total.shape)
        return self.default if total[self.default] >= total[best] - TIE else tuple(int(i) for i in best)

    def mean(self, idx, groups=None) -> float:
        k = slice(None) if groups is None else np.asarray(groups, bool)
        return float(self.sums[idx][k].sum() / self.counts[k].sum())

    def empty_share(self, idx, groups=None) -> float:
        k = slice(None) if groups is None else np.asarray(groups, bool)
        return float(self.empty[idx][k].sum() / self.counts[k].sum())


def grid(q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None, flat: np.ndarray | None = None,
         groups: np.ndarray | None = None, thresholds: Sequence[float] = THRESHOLDS,
         min_areas: Sequence[int] = MIN_AREAS, gates: Sequence[float] = GATES,
         default: PostProcess = DEFAULTS) -> Grid:
    """Score every (threshold, min area, gate, flat) setting on out-of-fold predictions, per group of images.

    ``q``: (N, H, W) uint8 quantised probabilities (the ``.npz`` format; float input in [0, 1] is quantised);
    ``truth``: (N, H, W) bool; ``image_probs``: (N,) (gating is searched when they are all finite); ``flat``: (N,)
    bool flat-image flags (the flat rule is searched on and off when given); ``groups``: (N,) ints 0..K-1 (None:
    one group). The per-image histograms of the levels give each image's area and intersection at every threshold;
    the scores of all settings are then array operations on those counts (no loop per image or setting).
    """
    c = ImageCounts.of(q, truth, image_probs, flat)
    n = len(c)
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    k_groups = int(groups.max()) + 1
    onehot = np.zeros((n, k_groups))
    onehot[np.arange(n), groups] = 1.0
    counts = np.bincount(groups, minlength=k_groups)
    thresholds = sorted({float(t) for t in thresholds} | {default.threshold})
    min_areas = sorted({int(a) for a in min_areas} | {default.min_area})
    use_gate = c.image_probs is not None
    gate_values: list[float | None] = [None] + (sorted({float(g) for g in gates}) if use_gate else [])
    if default.gate is not None and use_gate and default.gate not in gate_values:
        gate_values.append(default.gate)
    flat_values = [default.flat, not default.flat] if c.flat is not None else [default.flat]
    flat_arr = np.zeros(n, bool) if c.flat is None else c.flat

    gate_drop = np.stack([c.gated(g) for g in gate_values])  # (G, N)
    areas = np.asarray(min_areas)
    shape = (len(thresholds), len(areas), len(gate_values), len(flat_values), k_groups)
    sums, empty = np.empty(shape), np.empty(shape, np.int64)
    for i, t in enumerate(thresholds):
        area, keep_score, delta = c.at(t)
        small = area[None, :] < areas[:, None]  # (A, N)
        for k, fv in enumerate(flat_values):
            drop = small[:, None, :] | gate_drop[None, :, :] | (flat_arr & fv)[None, None, :]  # (A, G, N)
            sums[i, :, :, k] = keep_score @ onehot + (drop * delta) @ onehot
            empty[i, :, :, k] = np.rint((drop | (area == 0)) @ onehot).astype(np.int64)
    default_idx = (thresholds.index(default.threshold), min_areas.index(default.min_area),
                   gate_values.index(default.gate) if default.gate in gate_values else 0,
                   flat_values.index(default.flat) if default.flat in flat_values else 0)
    return Grid(thresholds, min_areas, gate_values, flat_values, sums, empty, counts, default_idx, c)


@dataclass
class SearchResult:
    best: PostProcess
    best_score: float
    default: PostProcess
    default_score: float
    count: int
    table: list  # rows (PostProcess, score) of the best setting per threshold, ascending threshold

    @property
    def gain(self) -> float:
        return self.best_score - self.default_score

    def lines(self) -> list[str]:
        return [f"searched {self.count} images: threshold x min area x gate x flat",
                f"default  score {self.default_score:.6f}  {self.default.describe()}",
                f"best     score {self.best_score:.6f}  {self.best.describe()}",
                f"gain     {self.gain:+.6f}",
                f"test.py flags: {self.best.flags()}", *self.table_lines()]

    def table_lines(self) -> list[str]:
        rows = [(p, s) for p, s in self.table
                if abs(p.threshold * 10 - round(p.threshold * 10)) < 1e-9 or p == self.best]
        return ["best setting per threshold (every 0.1, and the best):"] + [
            f"  threshold {p.threshold:.2f}  min area {p.min_area:4d}  "
            f"gate {'off' if p.gate is None else f'{p.gate:.2f}':>4}  flat {'on ' if p.flat else 'off'}  "
            f"score {s:.6f}" for p, s in rows]


def result_of(g: Grid) -> SearchResult:
    """The in-sample search of a grid: the best setting over all its images (the default on a tie), the default's
    score, and the best setting per threshold."""
    total = g.sums.sum(axis=-1) / g.counts.sum()
    best = g.pick()
    table = []
    for i in range(len(g.thresholds)):
        a, gi, f = np.unravel_index(int(np.argmax(total[i])), total[i].shape)
        table.append((g.setting((i, a, gi, f)), float(total[i, a, gi, f])))
    return SearchResult(best=g.setting(best), best_score=float(total[best]), default=g.setting(g.default),
                        default_score=float(total[g.default]), count=int(g.counts.sum()), table=table)


def search(q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None, flat: np.ndarray | None = None,
           thresholds: Sequence[float] = THRESHOLDS, min_areas: Sequence[int] = MIN_AREAS,
           gates: Sequence[float] = GATES, default: PostProcess = DEFAULTS) -> SearchResult:
    """Grid search of the post-processing on out-of-fold predictions, chosen and scored on the same images (see
    :func:`grid` for the arguments; :func:`honest_search` adds the held-out estimate)."""
    return result_of(grid(q, truth, image_probs, flat, None, thresholds, min_areas, gates, default))


# -- the honest search: nested over folds ---------------------------------------------------------------------------
@dataclass
class HeldOut:
    """One fold of the nested search: the setting searched on the other folds, scored on this one."""

    name: str
    count: int
    setting: PostProcess
    score: float
    default_score: float
    index: int = 0  # the fold's group number in :attr:`HonestSearch.groups`

    @property
    def gain(self) -> float:
        return self.score - self.default_score


@dataclass
class Family:
    """A family of settings (:data:`FAMILIES`) searched in-sample and nested, and the credibility of its held-out
    gain (:func:`tgs.credibility.judge` on the per-image differences ``diffs``)."""

    name: str
    best: PostProcess  # chosen on all images
    best_score: float
    in_sample_gain: float
    held_out_gain: float  # NaN when there are not two groups
    folds: list
    verdict: Verdict | None = None
    diffs: np.ndarray | None = None  # (N,) each image's nested score minus its default score


@dataclass
class HonestSearch:
    """The in-sample search, its nested (held-out) estimate per family, and the setting chosen to be saved: the
    family whose held-out gain is credible (:mod:`tgs.credibility`), the full grid only where its extra gain over the
    threshold alone is credible too; else the defaults."""

    result: SearchResult  # the full grid, in-sample
    families: dict
    chosen: PostProcess
    chosen_score: float  # in-sample
    reason: str
    truth_empty: float
    empty: dict  # 'default', 'best', 'chosen' -> share of empty predicted masks
    names: list
    counts: list
    notes: list
    groups: np.ndarray | None = None  # (N,) the fold of each image, 0..K-1 (names[k])
    chosen_family: str | None = None  # the family of the chosen setting; None: the defaults
    extra: Verdict | None = None  # the full grid's gain over the threshold alone, when both are credible

    def held_out_settings(self) -> list[tuple[np.ndarray, PostProcess]]:
        """(images of fold k (bool, (N,)), the setting chosen for it without its truth) for each fold: the chosen
        family's setting searched on the other folds, or the defaults when the defaults were chosen."""
        if self.groups is None:
            return []
        if self.chosen_family is None:
            return [(self.groups == k, self.chosen) for k in range(len(self.names))]
        return [(self.groups == h.index, h.setting) for h in self.families[self.chosen_family].folds]

    def verdicts(self) -> dict:
        """What was judged -> its :class:`tgs.credibility.Verdict`: each family, and 'all over threshold' (the full
        grid's extra gain over the threshold alone) when both were credible."""
        out = {name: f.verdict for name, f in self.families.items() if f.verdict is not None}
        if self.extra is not None:
            out["all over threshold"] = self.extra
        return out

    def lines(self) -> list[str]:
        r, full, thr = self.result, self.families["all"], self.families["threshold"]
        folds = ", ".join(f"{n} {c}" for n, c in zip(self.names, self.counts))
        out = [*self.notes, f"searched {r.count} images in {len(self.names)} folds ({folds}): {FAMILIES['all']}",
               f"default  score {r.default_score:.6f}  {r.default.describe()}; empty masks "
               f"{self.empty['default']:.1%} (true masks {self.truth_empty:.1%})",
               f"best     score {r.best_score:.6f}  {r.best.describe()}; empty masks {self.empty['best']:.1%}",
               f"gain     {r.gain:+.6f}  (in-sample: the best setting chosen and scored on the same images)",
               f"held-out gain {full.held_out_gain:+.6f}  (nested: each fold scored with the best setting of the "
               "other folds)"]
        out += [f"  {h.name:<10s} {h.count:5d} images  gain {h.gain:+.6f}  chosen on the rest: {h.setting.describe()}"
                for h in full.folds]
        out += [f"  full search: {full.verdict.why}" if full.verdict else "",
                f"threshold only: in-sample gain {thr.in_sample_gain:+.6f}, held-out gain {thr.held_out_gain:+.6f} "
                f"(threshold {thr.best.threshold:g})",
                f"  threshold only: {thr.verdict.why}" if thr.verdict else "",
                f"chosen   score {self.chosen_score:.6f}  {self.chosen.describe()}; empty masks "
                f"{self.empty['chosen']:.1%}",
                f"  why: {self.reason}",
                f"test.py flags: {self.chosen.flags()}", *r.table_lines()]
        return [line for line in out if line]


def halves(n: int) -> np.ndarray:
    """(n,) group of each image: 0 for the first half, 1 for the second (the held-out estimate of a single fold)."""
    return (np.arange(n) >= (n + 1) // 2).astype(np.int64)


def nested_family(g: Grid, name: str, groups: np.ndarray, names: list) -> Family:
    """The family ``name`` searched on all images and nested (each fold with the best setting of the other folds),
    with the per-image held-out differences and their verdict."""
    k_groups, n = len(g.counts), len(groups)
    best = g.pick(family=name)
    base = g.images.scores(g.setting(g.default))
    diffs, folds = np.zeros(n), []
    for k in range(k_groups):
        rest = np.arange(k_groups) != k
        if not rest.any() or g.counts[rest].sum() == 0:
            continue
        idx = g.pick(rest, name)
        here = np.arange(k_groups) == k
        folds.append(HeldOut(names[k], int(g.counts[k]), g.setting(idx), g.mean(idx, here),
                             g.mean(g.default, here), k))
        sel = groups == k
        diffs[sel] = g.images.scores(g.setting(idx))[sel] - base[sel]
    nested = len(folds) == k_groups and k_groups > 1
    held = (sum(h.gain * h.count for h in folds) / n) if nested else np.nan
    verdict = judge(diffs, groups) if nested else None
    return Family(name, g.setting(best), g.mean(best), g.mean(best) - g.mean(g.default), float(held), folds,
                  verdict, diffs if nested else None)


def honest_search(q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None,
                  flat: np.ndarray | None = None, groups: np.ndarray | None = None, names: Sequence[str] = (),
                  default: PostProcess = DEFAULTS, **grid_values) -> HonestSearch:
    """:func:`search` with a held-out estimate: for each fold (``groups`` (N,) ints 0..K-1, named ``names``), the
    best setting of the other folds scored on it; its gain over the defaults, over all images, is the held-out gain.
    Done for the full grid and for the threshold alone; the saved choice is decided by :func:`choose` (a credible
    held-out gain, else the defaults). With fewer than two folds the images are split into two halves for the
    estimate (said in the notes)."""
    n = len(q)
    notes = []
    if groups is None or len(np.unique(groups)) < 2:
        if n >= 2:
            notes.append("one fold only: the held-out estimate splits its images into two halves")
        groups, names = halves(n), ["first half", "second half"]
    groups = np.asarray(groups, np.int64)
    _, groups = np.unique(groups, return_inverse=True)  # groups 0..K-1 that all hold images
    names = list(names) if len(names) == groups.max() + 1 else [f"group {k}" for k in range(groups.max() + 1)]
    g = grid(q, truth, image_probs, flat, groups, default=default, **grid_values)
    families = {name: nested_family(g, name, groups, names) for name in ("threshold", "all")}
    chosen_name, reason, extra = choose(families, groups)
    idx = g.pick(family=chosen_name) if chosen_name else g.default
    truth_empty = float((~np.asarray(truth, bool).reshape(n, -1).any(axis=1)).mean())
    return HonestSearch(result_of(g), families, g.setting(idx), g.mean(idx), reason, truth_empty,
                        {"default": g.empty_share(g.default), "best": g.empty_share(g.pick()),
                         "chosen": g.empty_share(idx)}, names, [int(c) for c in g.counts], notes, groups,
                        chosen_name, extra)


def choose(families: dict, groups: np.ndarray) -> tuple[str | None, str, Verdict | None]:
    """(family to save or None for the defaults, why, the verdict on the full grid's gain over the threshold alone
    when it was judged): a family whose held-out gain is credible; the full grid over the threshold alone only when
    its extra held-out gain over it is credible too."""
    thr, full = families["threshold"], families["all"]
    if thr.verdict is None or full.verdict is None:
        return None, "the held-out gain cannot be estimated on a single image: keeping the defaults", None
    if not (thr.verdict.credible or full.verdict.credible):
        return None, ("no search's held-out gain is credible: keeping the defaults (full search "
                      f"{full.held_out_gain:+.6f}, {full.verdict.why}; threshold only {thr.held_out_gain:+.6f}, "
                      f"{thr.verdict.why})"), None
    if not full.verdict.credible:
        return "threshold", f"the threshold alone generalises, credibly ({thr.verdict.why})", None
    if not thr.verdict.credible:
        return "all", f"the full search generalises, credibly ({full.verdict.why})", None
    extra = judge(full.diffs - thr.diffs, groups)
    if extra.credible:
        return "all", (f"the full search generalises better than the threshold alone, credibly (its extra gain: "
                       f"{extra.why})"), extra
    return "threshold", ("the threshold alone generalises at least as well as the full search: the full search's "
                         f"extra held-out gain {extra.gain:+.6f} over it is {extra.why}"), extra
