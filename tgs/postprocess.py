"""From salt probabilities to submitted masks, and the out-of-fold search of the post-processing settings.

Post-processing (:func:`apply`), vectorised over the whole batch (numpy operations on (N, H, W) arrays, no
Python loop per image), in this order:

1. threshold: a pixel is salt when its probability is strictly above ``threshold``;
2. minimum salt area: a prediction with fewer than ``min_area`` salt pixels becomes empty;
3. empty-image gating: an image whose image-level "has salt" probability is below ``gate`` becomes empty
   (off when ``gate`` is None; an unknown image probability, NaN, never gates);
4. flat images: an image whose pixels all have one value gets an empty mask (on real TGS data these carry no
   information and their masks are empty).

A setting (:class:`PostProcess`) also names the mosaic rules (:mod:`tgs.mosaic_rules`) that run after these steps
where the layout and the known train masks are at hand (test.py ``--mosaics``); :func:`apply` does not run them,
so callers without mosaics use it unchanged.

Defaults (:data:`DEFAULTS`): threshold 0.5, min area 0, gating off, flat on. These are the neutral settings: the
synthetic data of this repository cannot tune anything for the real data, and ``score.py --search OOF.npz
--truth DATA/train.csv`` prints the best setting found on a run's out-of-fold predictions and its gain over
these defaults; ``--save-best post.json`` writes it for ``test.py --post-config post.json`` (flags given to
test.py override the file's values). ``ensemble.py`` does both: its submission uses the setting found on its own
out-of-fold predictions.

Search (:func:`search`): for every image, a histogram of its quantised probabilities (the 256 levels of the
``.npz`` format) over all pixels and over its true salt pixels gives the predicted area and the intersection at
every threshold at once (reverse cumulative sums); every (threshold, min area, gate, flat) combination is then
scored from those counts with array operations. The scores equal those of :func:`apply` followed by
:mod:`tgs.metric` on the loaded probabilities, exactly. :func:`grid` keeps those scores per group of images
(folds), so :func:`honest_search` gets from the same pass the nested estimate: each fold scored with the best
setting of the other folds. Its held-out gain tells whether a search generalises; the setting it chooses to save
is the one that does (the threshold alone, the full grid, or the defaults when neither gains held out).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from tgs import TILE, metric
from tgs.errors import UserError, excerpt
from tgs.io import read_config_text, require_file
from tgs.mosaic_rules import parse_rules
from tgs.probabilities import at_least, level_histograms, level_of, quantize

_CHUNK = 512  # images per block in apply(): bounds the temporaries


@dataclass(frozen=True)
class PostProcess:
    """One post-processing setting: the steps of :func:`apply` and the mosaic rules (:mod:`tgs.mosaic_rules`,
    names in the order of :data:`tgs.mosaic_rules.RULES`) that run after it where a layout is known."""

    threshold: float = 0.5
    min_area: int = 0
    gate: float | None = None
    flat: bool = True
    rules: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "rules", parse_rules(self.rules, "mosaic rules"))
        if not 0.0 <= self.threshold < 1.0:
            raise UserError(f"--threshold {self.threshold}: must be in [0, 1)")
        if not 0 <= self.min_area <= TILE * TILE:
            raise UserError(f"--min-area {self.min_area}: must be in 0..{TILE * TILE} (the pixels of a tile)")
        if self.gate is not None and not 0.0 <= self.gate <= 1.0:
            raise UserError(f"--gate {self.gate}: must be in [0, 1] (or none)")

    def to_dict(self) -> dict:
        return {**asdict(self), "rules": list(self.rules)}

    def describe(self) -> str:
        gate = "off" if self.gate is None else f"{self.gate:g}"
        rules = f"; mosaic rules {', '.join(self.rules)}" if self.rules else ""
        return (f"threshold {self.threshold:g}, min area {self.min_area}, gate {gate}, "
                f"flat images {'empty' if self.flat else 'as predicted'}{rules}")

    def flags(self) -> str:
        """The test.py flags that select this setting (rules also need ``--mosaics DIR/mosaics.csv``)."""
        gate = "none" if self.gate is None else f"{self.gate:g}"
        return (f"--threshold {self.threshold:g} --min-area {self.min_area} --gate {gate}"
                + ("" if self.flat else " --no-flat") + (f" --mosaic-rules {','.join(self.rules)}" if self.rules
                                                          else ""))


DEFAULTS = PostProcess()
FIELDS = ("threshold", "min_area", "gate", "flat", "rules")  # the keys of a setting in a post-config file


def parse_gate(text: str) -> float | None:
    """``none``/``off`` -> None, else a float (argparse type for ``--gate``)."""
    if str(text).lower() in ("none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--gate {text!r}: expected a probability in [0, 1] or none") from None


def save_setting(path, setting: PostProcess, info: dict | None = None) -> None:
    """Write ``setting`` as JSON (atomically): the fields of :class:`PostProcess` and ``info`` (score, source ...).
    ``score.py --search --save-best`` writes it; ``test.py --post-config`` reads it."""
    import json

    from tgs.io import atomic_open

    with atomic_open(path, "w") as fh:
        json.dump({**setting.to_dict(), **(info or {})}, fh, indent=2)
        fh.write("\n")


def load_setting(path) -> tuple[PostProcess, dict]:
    """(setting, the file's other keys) from a :func:`save_setting` file; a bad file is a UserError naming it."""
    import json
    from pathlib import Path

    path = require_file(path, "--post-config ", "JSON file")
    def unique(pairs):
        keys = [k for k, _ in pairs]
        twice = [k for k in keys if keys.count(k) > 1]
        if twice:
            raise UserError(f"--post-config {path}: key {excerpt(twice[0])} is given twice")
        return dict(pairs)

    try:
        data = json.loads(read_config_text(path, "--post-config "), object_pairs_hook=unique)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"--post-config {path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"--post-config {path}: expected a JSON object with threshold, min_area, gate, flat")
    import difflib

    for key in data:
        near = difflib.get_close_matches(str(key), FIELDS, n=1, cutoff=0.75)
        if key not in FIELDS and near:
            raise UserError(f"--post-config {path}: unknown key {excerpt(key)} (did you mean {near[0]}?)")
    missing = [k for k in ("threshold", "min_area", "gate", "flat") if k not in data]
    if missing:
        raise UserError(f"--post-config {path}: missing {', '.join(missing)}")
    number = (int, float)
    rules = data.get("rules", [])  # files written before the mosaic rules have none
    checks = {
        "threshold": isinstance(data["threshold"], number) and not isinstance(data["threshold"], bool),
        "min_area": isinstance(data["min_area"], int) and not isinstance(data["min_area"], bool),
        "gate": data["gate"] is None or (isinstance(data["gate"], number) and not isinstance(data["gate"], bool)),
        "flat": isinstance(data["flat"], bool),
        "rules": isinstance(rules, list) and all(isinstance(r, str) for r in rules),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        value = rules if bad[0] == "rules" else data[bad[0]]
        raise UserError(f"--post-config {path}: {bad[0]} = {excerpt(value)} is not a valid value"
                        + (" (a list of rule names)" if bad[0] == "rules" else ""))
    try:
        setting = PostProcess(float(data["threshold"]), data["min_area"],
                              None if data["gate"] is None else float(data["gate"]), data["flat"],
                              parse_rules(rules, "rules"))
    except UserError as exc:
        raise UserError(f"--post-config {path}: {exc}") from None
    info = {k: v for k, v in data.items() if k not in FIELDS}
    return setting, info


def resolve(config=None, given: dict | None = None) -> tuple[PostProcess, str]:
    """(setting, where it comes from): the ``config`` file's setting (:func:`load_setting`) or :data:`DEFAULTS`,
    with the fields in ``given`` (flags on the command line) replacing theirs."""
    base, source = DEFAULTS, "defaults"
    if config:
        base, info = load_setting(config)
        source = str(config) + (f", searched on {info['searched_on']}" if info.get("searched_on") else "")
    given = given or {}
    unknown = set(given) - set(base.to_dict())
    if unknown:
        raise ValueError(f"not post-processing fields: {sorted(unknown)}")
    if given and config:
        source += f"; {', '.join(k.replace('_', ' ') for k in given)} from the command line"
    return PostProcess(**{**base.to_dict(), **given}), source


def flat_images(images: np.ndarray) -> np.ndarray:
    """(N,) bool: images whose pixels all have the same value."""
    flat = np.asarray(images).reshape(len(images), -1)
    return flat.min(axis=1) == flat.max(axis=1)


def emptied(area: np.ndarray, image_probs: np.ndarray | None, flat: np.ndarray | None,
            params: PostProcess) -> np.ndarray:
    """(N,) bool: images whose prediction steps 2-4 replace by an empty mask, from the thresholded areas."""
    out = np.asarray(area) < params.min_area
    if params.gate is not None and image_probs is not None:
        img = np.asarray(image_probs, dtype=np.float32)
        out |= img < params.gate  # NaN compares False: never gated
    if params.flat and flat is not None:
        out |= np.asarray(flat, dtype=bool)
    return out


def apply(probs: np.ndarray, image_probs: np.ndarray | None = None, images: np.ndarray | None = None,
          params: PostProcess = DEFAULTS) -> np.ndarray:
    """Masks (N, H, W) bool from probabilities (N, H, W) (float in [0, 1], or (N, 1, H, W)).

    ``image_probs`` (N,) feed the gating, ``images`` (N, H, W) the flat-image rule; either may be None (that
    step is then skipped).
    """
    probs = np.asarray(probs)
    if probs.ndim == 4:
        probs = probs[:, 0]
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities of shape (N, H, W), got {probs.shape}")
    n = len(probs)
    if image_probs is not None and len(image_probs) != n:
        raise ValueError(f"{n} probability maps but {len(image_probs)} image probabilities")
    if images is not None and len(images) != n:
        raise ValueError(f"{n} probability maps but {len(images)} images")
    masks = np.empty(probs.shape, dtype=bool)
    for first in range(0, n, _CHUNK):  # blocks of images: the whole set at once, in cache-sized pieces
        np.greater(probs[first:first + _CHUNK], params.threshold, out=masks[first:first + _CHUNK])
    area = np.count_nonzero(masks.reshape(n, -1), axis=1)
    drop = emptied(area, image_probs, flat_images(images) if images is not None else None, params)
    masks[drop] = False
    return masks


# -- out-of-fold search ---------------------------------------------------------------------------------------------
THRESHOLDS = np.round(np.arange(0.20, 0.801, 0.02), 2)
MIN_AREAS = np.array([0, 5, 10, 15, 20, 30, 40, 60, 80, 100, 150, 200, 300])
GATES = np.round(np.arange(0.05, 0.951, 0.05), 2)
TIE = 1e-9  # summed image scores this close count as equal: the default (or the smaller change) is kept
FAMILIES = {"threshold": "threshold only (min area, gate and flat rule at the defaults)",
            "all": "threshold x min area x gate x flat"}


@dataclass
class Grid:
    """Every setting of a search scored on groups of images (e.g. folds): ``sums[t, a, g, f, k]`` is the summed
    image score of setting (thresholds[t], min_areas[a], gates[g], flats[f]) over the images of group k, and
    ``empty`` the number of its predictions that are empty."""

    thresholds: list
    min_areas: list
    gates: list
    flats: list
    sums: np.ndarray  # (T, A, G, F, K) float64
    empty: np.ndarray  # (T, A, G, F, K) int64
    counts: np.ndarray  # (K,) images per group
    default: tuple  # index of the default setting

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
    q = quantize(np.asarray(q))
    truth = np.asarray(truth, dtype=bool)
    if q.shape != truth.shape:
        raise ValueError(f"probabilities {q.shape} and truth {truth.shape} differ in shape")
    n = len(q)
    if n == 0:
        raise UserError("no images to search on")
    groups = np.zeros(n, np.int64) if groups is None else np.asarray(groups, np.int64)
    k_groups = int(groups.max()) + 1
    onehot = np.zeros((n, k_groups))
    onehot[np.arange(n), groups] = 1.0
    counts = np.bincount(groups, minlength=k_groups)
    thresholds = sorted({float(t) for t in thresholds} | {default.threshold})
    min_areas = sorted({int(a) for a in min_areas} | {default.min_area})
    use_gate = image_probs is not None and bool(np.isfinite(image_probs).all())
    gate_values: list[float | None] = [None] + (sorted({float(g) for g in gates}) if use_gate else [])
    if default.gate is not None and use_gate and default.gate not in gate_values:
        gate_values.append(default.gate)
    flat_values = [default.flat, not default.flat] if flat is not None else [default.flat]
    flat_arr = np.zeros(n, bool) if flat is None else np.asarray(flat, dtype=bool)

    all_counts, salt_counts = level_histograms(q, truth)
    # area[:, k] = pixels with level >= k (k = 0..256), for every level at once
    area_ge, inter_ge = at_least(all_counts), at_least(salt_counts)
    truth_area = salt_counts.sum(axis=1)
    empty_truth_score = (truth_area == 0).astype(np.float64)  # an emptied prediction scores 1 on empty truth

    img = np.asarray(image_probs, np.float32) if use_gate else np.zeros(n, np.float32)
    gate_drop = np.stack([np.zeros(n, bool) if g is None else img < g for g in gate_values])  # (G, N)
    areas = np.asarray(min_areas)
    shape = (len(thresholds), len(areas), len(gate_values), len(flat_values), k_groups)
    sums, empty = np.empty(shape), np.empty(shape, np.int64)
    for i, t in enumerate(thresholds):
        level = level_of(t)
        area, inter = area_ge[:, level], inter_ge[:, level]
        keep_score = metric.hits(inter, area + truth_area - inter).mean(axis=1)  # (N,)
        delta = empty_truth_score - keep_score  # change of each image's score when it is emptied
        small = area[None, :] < areas[:, None]  # (A, N)
        for k, fv in enumerate(flat_values):
            drop = small[:, None, :] | gate_drop[None, :, :] | (flat_arr & fv)[None, None, :]  # (A, G, N)
            sums[i, :, :, k] = keep_score @ onehot + (drop * delta) @ onehot
            empty[i, :, :, k] = np.rint((drop | (area == 0)) @ onehot).astype(np.int64)
    default_idx = (thresholds.index(default.threshold), min_areas.index(default.min_area),
                   gate_values.index(default.gate) if default.gate in gate_values else 0,
                   flat_values.index(default.flat) if default.flat in flat_values else 0)
    return Grid(thresholds, min_areas, gate_values, flat_values, sums, empty, counts, default_idx)


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
    """A family of settings (:data:`FAMILIES`) searched in-sample and nested."""

    name: str
    best: PostProcess  # chosen on all images
    best_score: float
    in_sample_gain: float
    held_out_gain: float  # NaN when there are not two groups
    folds: list


@dataclass
class HonestSearch:
    """The in-sample search, its nested (held-out) estimate per family, and the setting chosen to be saved: the
    family whose held-out gain is largest and positive (the smaller family on a tie), else the defaults."""

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

    def held_out_settings(self) -> list[tuple[np.ndarray, PostProcess]]:
        """(images of fold k (bool, (N,)), the setting chosen for it without its truth) for each fold: the chosen
        family's setting searched on the other folds, or the defaults when the defaults were chosen."""
        if self.groups is None:
            return []
        if self.chosen_family is None:
            return [(self.groups == k, self.chosen) for k in range(len(self.names))]
        return [(self.groups == h.index, h.setting) for h in self.families[self.chosen_family].folds]

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
        out += [f"threshold only: in-sample gain {thr.in_sample_gain:+.6f}, held-out gain {thr.held_out_gain:+.6f} "
                f"(threshold {thr.best.threshold:g})",
                f"chosen   score {self.chosen_score:.6f}  {self.chosen.describe()}; empty masks "
                f"{self.empty['chosen']:.1%}",
                f"  why: {self.reason}",
                f"test.py flags: {self.chosen.flags()}", *r.table_lines()]
        return out


def halves(n: int) -> np.ndarray:
    """(n,) group of each image: 0 for the first half, 1 for the second (the held-out estimate of a single fold)."""
    return (np.arange(n) >= (n + 1) // 2).astype(np.int64)


def honest_search(q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None,
                  flat: np.ndarray | None = None, groups: np.ndarray | None = None, names: Sequence[str] = (),
                  default: PostProcess = DEFAULTS, **grid_values) -> HonestSearch:
    """:func:`search` with a held-out estimate: for each fold (``groups`` (N,) ints 0..K-1, named ``names``), the
    best setting of the other folds scored on it; its gain over the defaults, summed over the folds, is the held-out
    gain. Done for the full grid and for the threshold alone; the saved choice is the family with the largest
    positive held-out gain (its setting chosen on all images), else the defaults. With fewer than two folds the
    images are split into two halves for the estimate (said in the notes)."""
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
    k_groups = len(g.counts)
    families = {}
    for name in ("threshold", "all"):
        best = g.pick(family=name)
        folds = []
        for k in range(k_groups):
            rest = np.arange(k_groups) != k
            if not rest.any() or g.counts[rest].sum() == 0:
                continue
            idx = g.pick(rest, name)
            here = np.arange(k_groups) == k
            folds.append(HeldOut(names[k], int(g.counts[k]), g.setting(idx), g.mean(idx, here),
                                 g.mean(g.default, here), k))
        held = (sum(h.gain * h.count for h in folds) / n) if len(folds) == k_groups and k_groups > 1 else np.nan
        families[name] = Family(name, g.setting(best), g.mean(best), g.mean(best) - g.mean(g.default), float(held),
                                folds)
    chosen_name, reason = _choose(families)
    idx = g.pick(family=chosen_name) if chosen_name else g.default
    truth_empty = float((~np.asarray(truth, bool).reshape(n, -1).any(axis=1)).mean())
    return HonestSearch(result_of(g), families, g.setting(idx), g.mean(idx), reason, truth_empty,
                        {"default": g.empty_share(g.default), "best": g.empty_share(g.pick()),
                         "chosen": g.empty_share(idx)}, names, [int(c) for c in g.counts], notes, groups,
                        chosen_name)


def _choose(families: dict) -> tuple[str | None, str]:
    """(family to save or None for the defaults, why): the largest positive held-out gain, the smaller family
    ('threshold') on a tie."""
    thr, full = families["threshold"], families["all"]
    if np.isnan(full.held_out_gain):
        return None, "the held-out gain cannot be estimated on a single image: keeping the defaults"
    gains = f"held-out gains: threshold only {thr.held_out_gain:+.6f}, full search {full.held_out_gain:+.6f}"
    if max(thr.held_out_gain, full.held_out_gain) <= 0:
        return None, f"no search generalises ({gains}, none positive): keeping the defaults"
    if full.held_out_gain > thr.held_out_gain + 1e-12:
        return "all", f"the full search generalises best ({gains})"
    return "threshold", f"the threshold alone generalises at least as well as the full search ({gains})"
