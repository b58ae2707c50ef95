"""From salt probabilities to submitted masks, and the out-of-fold search of the post-processing settings.

Post-processing (:func:`apply`), vectorised over the whole batch (numpy operations on (N, H, W) arrays, no
Python loop per image), in this order:

1. threshold: a pixel is salt when its probability is strictly above ``threshold``;
2. minimum salt area: a prediction with fewer than ``min_area`` salt pixels becomes empty;
3. empty-image gating: an image whose image-level "has salt" probability is below ``gate`` becomes empty
   (off when ``gate`` is None; an unknown image probability, NaN, never gates);
4. flat images: an image whose pixels all have one value gets an empty mask (on real TGS data these carry no
   information and their masks are empty).

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
:mod:`tgs.metric` on the loaded probabilities, exactly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from tgs import metric
from tgs.errors import UserError
from tgs.probabilities import at_least, level_histograms, level_of, quantize

_CHUNK = 512  # images per block in apply(): bounds the temporaries


@dataclass(frozen=True)
class PostProcess:
    threshold: float = 0.5
    min_area: int = 0
    gate: float | None = None
    flat: bool = True

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0:
            raise UserError(f"--threshold {self.threshold}: must be in [0, 1)")
        if self.min_area < 0:
            raise UserError(f"--min-area {self.min_area}: must be >= 0")
        if self.gate is not None and not 0.0 <= self.gate <= 1.0:
            raise UserError(f"--gate {self.gate}: must be in [0, 1] (or none)")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        gate = "off" if self.gate is None else f"{self.gate:g}"
        return (f"threshold {self.threshold:g}, min area {self.min_area}, gate {gate}, "
                f"flat images {'empty' if self.flat else 'as predicted'}")

    def flags(self) -> str:
        """The test.py flags that select this setting."""
        gate = "none" if self.gate is None else f"{self.gate:g}"
        return f"--threshold {self.threshold:g} --min-area {self.min_area} --gate {gate}" + ("" if self.flat else " --no-flat")


DEFAULTS = PostProcess()


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

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--post-config {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"--post-config {path}: not a JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"--post-config {path}: expected a JSON object with threshold, min_area, gate, flat")
    missing = [k for k in ("threshold", "min_area", "gate", "flat") if k not in data]
    if missing:
        raise UserError(f"--post-config {path}: missing {', '.join(missing)}")
    number = (int, float)
    checks = {
        "threshold": isinstance(data["threshold"], number) and not isinstance(data["threshold"], bool),
        "min_area": isinstance(data["min_area"], int) and not isinstance(data["min_area"], bool),
        "gate": data["gate"] is None or (isinstance(data["gate"], number) and not isinstance(data["gate"], bool)),
        "flat": isinstance(data["flat"], bool),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise UserError(f"--post-config {path}: {bad[0]} = {data[bad[0]]!r} is not a valid value")
    try:
        setting = PostProcess(float(data["threshold"]), data["min_area"],
                              None if data["gate"] is None else float(data["gate"]), data["flat"])
    except UserError as exc:
        raise UserError(f"--post-config {path}: {exc}") from None
    info = {k: v for k, v in data.items() if k not in ("threshold", "min_area", "gate", "flat")}
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
        out = [f"searched {self.count} images: threshold x min area x gate x flat",
               f"default  score {self.default_score:.6f}  {self.default.describe()}",
               f"best     score {self.best_score:.6f}  {self.best.describe()}",
               f"gain     {self.gain:+.6f}",
               f"test.py flags: {self.best.flags()}",
               "best setting per threshold (every 0.1, and the best):"]
        rows = [(p, s) for p, s in self.table
                if abs(p.threshold * 10 - round(p.threshold * 10)) < 1e-9 or p == self.best]
        out += [f"  threshold {p.threshold:.2f}  min area {p.min_area:4d}  "
                f"gate {'off' if p.gate is None else f'{p.gate:.2f}':>4}  flat {'on ' if p.flat else 'off'}  "
                f"score {s:.6f}" for p, s in rows]
        return out


def search(q: np.ndarray, truth: np.ndarray, image_probs: np.ndarray | None = None, flat: np.ndarray | None = None,
           thresholds: Sequence[float] = THRESHOLDS, min_areas: Sequence[int] = MIN_AREAS,
           gates: Sequence[float] = GATES, default: PostProcess = DEFAULTS) -> SearchResult:
    """Grid search of the post-processing on out-of-fold predictions.

    ``q``: (N, H, W) uint8 quantised probabilities (the ``.npz`` format; float input in [0, 1] is quantised);
    ``truth``: (N, H, W) bool; ``image_probs``: (N,) (gating is searched when they are all finite);
    ``flat``: (N,) bool flat-image flags (the flat rule is searched on and off when given).
    """
    q = np.asarray(q)
    q = quantize(q)
    truth = np.asarray(truth, dtype=bool)
    if q.shape != truth.shape:
        raise ValueError(f"probabilities {q.shape} and truth {truth.shape} differ in shape")
    n = len(q)
    if n == 0:
        raise UserError("no images to search on")
    thresholds = sorted({float(t) for t in thresholds} | {default.threshold})
    min_areas = sorted({int(a) for a in min_areas} | {default.min_area})
    use_gate = image_probs is not None and bool(np.isfinite(image_probs).all())
    gate_values: list[float | None] = [None] + (sorted({float(g) for g in gates}) if use_gate else [])
    if default.gate is not None and use_gate and default.gate not in gate_values:
        gate_values.append(default.gate)
    # the default first: on a tie (e.g. no flat image among those searched) the best setting keeps it
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
    scores = np.empty((len(thresholds), len(areas), len(gate_values), len(flat_values)))
    for i, t in enumerate(thresholds):
        level = level_of(t)
        area, inter = area_ge[:, level], inter_ge[:, level]
        keep_score = metric.hits(inter, area + truth_area - inter).mean(axis=1)  # (N,)
        delta = empty_truth_score - keep_score  # change of each image's score when it is emptied
        small = area[None, :] < areas[:, None]  # (A, N)
        for k, fv in enumerate(flat_values):
            drop = small[:, None, :] | gate_drop[None, :, :] | (flat_arr & fv)[None, None, :]  # (A, G, N)
            scores[i, :, :, k] = (keep_score.sum() + (drop * delta).sum(axis=-1)) / n

    def setting(i, a, g, k) -> PostProcess:
        return PostProcess(thresholds[i], int(areas[a]), gate_values[g], flat_values[k])

    best_idx = np.unravel_index(int(np.argmax(scores)), scores.shape)
    d_idx = (thresholds.index(default.threshold), min_areas.index(default.min_area),
             gate_values.index(default.gate) if default.gate in gate_values else 0,
             flat_values.index(default.flat) if default.flat in flat_values else 0)
    table = []
    for i in range(len(thresholds)):
        a, g, k = np.unravel_index(int(np.argmax(scores[i])), scores[i].shape)
        table.append((setting(i, a, g, k), float(scores[i, a, g, k])))
    return SearchResult(best=setting(*best_idx), best_score=float(scores[best_idx]),
                        default=setting(*d_idx), default_score=float(scores[d_idx]), count=n, table=table)
