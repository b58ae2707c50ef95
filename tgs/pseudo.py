"""Pseudo-labels: the test images a model (or an ensemble) is sure enough about to train on, and the file that
holds them. Numpy only: :mod:`engine.pseudo` makes a file from saved test predictions, ``train.py
--pseudo-labels FILE`` trains on it.

The rule (:class:`Rule`, :func:`select`), on the probabilities of every test image and the hard masks the caller
made from them (post-processed predictions):

- the confidence of an image is the share of its pixels whose probability is strictly below ``lo`` or strictly
  above ``hi`` (0.2 and 0.8 by default), compared in the probabilities' own dtype;
- an image is kept when its confidence is at least ``min_confidence`` (0.9 by default) and it is not flat (all
  pixels one value: such tiles carry no information, and post-processing empties their masks by rule);
- optional caps per bin of predicted coverage (:data:`tgs.coverage.COVERAGE_BINS` of the hard mask: empty, <1%,
  1-10%, 10-50%, >50% salt): ``caps={"empty": 0.5}`` keeps at most ``floor(0.5 n)`` of the ``n`` kept images
  predicted empty, the most confident first (on a tie, the earlier image).

The labels are those hard masks. The file (``pseudo-labels.npz``, :func:`save` / :func:`load`, never a pickle):

- ``ids``: (N,) unicode strings, distinct test ids;
- ``masks``: (N, 101, 101) bool, the labels;
- ``confidence``: (N,) float32 in [0, 1];
- ``source``, ``rule``, ``postprocess``: 0-d unicode strings, provenance (the probabilities file it was made
  from, the rule's and the post-processing's parameters as JSON).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tgs import TILE
from tgs.coverage import BIN_NAMES, coverage_bin
from tgs.errors import DataError, UserError, excerpt, few
from tgs.io import MAX_TILES, atomic_path, check_strings, read_npz

ARRAYS = ("ids", "masks", "confidence")
PROVENANCE = ("source", "rule", "postprocess")
WHAT = "pseudo-labels file"
_CHUNK = 1024  # images per block in confidence(): bounds the boolean temporaries


# -- the rule -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """Which images become pseudo-labels (see the module docstring). ``caps``: ``{bin name: share in [0, 1]}``
    (kept as sorted ``(name, share)`` pairs, in the bins' order)."""

    lo: float = 0.2
    hi: float = 0.8
    min_confidence: float = 0.9
    caps: tuple = ()

    def __post_init__(self):
        if not (0.0 <= self.lo < self.hi <= 1.0):
            raise UserError(f"--lo {self.lo:g} --hi {self.hi:g}: need 0 <= lo < hi <= 1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UserError(f"--min-confidence {self.min_confidence:g}: must be in [0, 1]")
        pairs = list(self.caps.items()) if isinstance(self.caps, Mapping) else list(self.caps)
        names = [name for name, _ in pairs]
        for name, share in pairs:
            if name not in BIN_NAMES:
                raise UserError(f"--cap {excerpt(name)}: not a coverage bin (use {', '.join(BIN_NAMES)})")
            if names.count(name) > 1:
                raise UserError(f"--cap {name} is given twice")
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
                raise UserError(f"--cap {name}={excerpt(share)}: the share kept must be a number in [0, 1]")
        caps = tuple(sorted(((n, float(s)) for n, s in pairs), key=lambda p: BIN_NAMES.index(p[0])))
        object.__setattr__(self, "caps", caps)

    def to_dict(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "min_confidence": self.min_confidence, "caps": dict(self.caps)}

    def describe(self) -> str:
        caps = f"; caps {', '.join(f'{n} {s:g}' for n, s in self.caps)}" if self.caps else ""
        return (f"confidence >= {self.min_confidence:g} (share of pixels with probability < {self.lo:g} or "
                f"> {self.hi:g}), flat images excluded{caps}")


def confidence(probs: np.ndarray, lo: float = 0.2, hi: float = 0.8) -> np.ndarray:
    """(N,) float64: the share of each image's pixels with probability ``< lo`` or ``> hi`` (float probabilities
    (N, H, W) in [0, 1]; block by block, no loop per image)."""
    probs = np.asarray(probs)
    if probs.dtype.kind != "f" or probs.ndim != 3:
        raise ValueError(f"expected float probabilities of shape (N, H, W), got {probs.dtype} {probs.shape}")
    n = len(probs)
    flat = probs.reshape(n, -1)
    out = np.empty(n, np.float64)
    for first in range(0, n, _CHUNK):
        block = flat[first:first + _CHUNK]
        out[first:first + _CHUNK] = np.count_nonzero((block < lo) | (block > hi), axis=1)
    return out / max(flat.shape[1], 1)


@dataclass
class Selection:
    """What :func:`select` kept: ``index`` (K,) positions into its input, ascending; and why the others went."""

    index: np.ndarray
    confidence: np.ndarray  # (N,) float64, every image's
    total: int
    flat: int  # flat images (never kept)
    confident: int  # confident and not flat, before the caps
    capped: dict = field(default_factory=dict)  # bin name -> images the cap dropped

    def lines(self, rule: Rule) -> list[str]:
        dropped = "; ".join(f"cap {n}: dropped {k}" for n, k in self.capped.items())
        return [f"rule: {rule.describe()}",
                f"{self.confident} of {self.total} images confident enough ({self.flat} flat images excluded)"
                f"{f'; {dropped}' if dropped else ''}; {len(self.index)} kept"]


def select(probs: np.ndarray, masks: np.ndarray, flat: np.ndarray, rule: Rule = Rule()) -> Selection:
    """The images of ``probs`` (N, H, W) float that ``rule`` keeps, given their hard masks (N, H, W) bool (the
    labels, whose coverage the caps look at) and their flat-image flags (N,) bool
    (:func:`tgs.postprocess.flat_images`)."""
    probs, masks, flat = np.asarray(probs), np.asarray(masks, dtype=bool), np.asarray(flat, dtype=bool)
    if masks.shape != probs.shape or flat.shape != (len(probs),):
        raise ValueError(f"probabilities {probs.shape}, masks {masks.shape} and flat flags {flat.shape} disagree")
    conf = confidence(probs, rule.lo, rule.hi)
    keep = (conf >= rule.min_confidence) & ~flat
    confident = int(keep.sum())
    bins = coverage_bin(masks)
    capped = {}
    for name, share in rule.caps:
        candidates = np.flatnonzero(keep & (bins == BIN_NAMES.index(name)))
        limit = math.floor(share * len(candidates) + 1e-9)  # share x n, without 0.29 x 100 = 28.999...
        ranked = candidates[np.argsort(-conf[candidates], kind="stable")]  # most confident first, ties: earlier
        keep[ranked[limit:]] = False
        capped[name] = len(candidates) - min(limit, len(candidates))
    return Selection(np.flatnonzero(keep), conf, len(probs), int(flat.sum()), confident, capped)


# -- the file ------------------------------------------------------------------------------------------------------
@dataclass
class PseudoLabels:
    ids: np.ndarray  # (N,) str
    masks: np.ndarray  # (N, 101, 101) bool
    confidence: np.ndarray  # (N,) float32
    provenance: dict = field(default_factory=dict)  # source, rule, postprocess: strings

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, ids, masks, selection: Selection, source: str = "", rule: Rule | None = None,
           postprocess: dict | None = None) -> "PseudoLabels":
        """The labels of the images ``selection`` kept out of ``ids`` and ``masks`` (all the images it saw)."""
        keep = selection.index
        provenance = {"source": str(source), "rule": json.dumps(rule.to_dict() if rule else {}, sort_keys=True),
                      "postprocess": json.dumps(postprocess or {}, sort_keys=True)}
        return cls(np.asarray(ids, dtype=str)[keep], np.asarray(masks, dtype=bool)[keep],
                   selection.confidence[keep].astype(np.float32), provenance)


def save(path: str | os.PathLike, labels: PseudoLabels) -> Path:
    """Write ``labels`` atomically (np.savez_compressed)."""
    ids = np.asarray(labels.ids, dtype=str)
    masks = np.asarray(labels.masks, dtype=bool)
    conf = np.asarray(labels.confidence, dtype=np.float32)
    if masks.shape != (len(ids), TILE, TILE) or conf.shape != (len(ids),):
        raise ValueError(f"{len(ids)} ids, masks {masks.shape}, confidence {conf.shape}")
    extra = {k: np.asarray(str(labels.provenance.get(k, ""))) for k in PROVENANCE}
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, ids=ids, masks=masks, confidence=conf, **extra)
    return path


def load(path: str | os.PathLike, test_ids: Sequence[str] | None = None) -> PseudoLabels:
    """Read a file written by :func:`save`; with ``test_ids`` (the data set's test ids), every id must be one of
    them. Anything else is one DataError line naming the file: missing, not an ``.npz``, truncated or corrupt, a
    pickle, a missing array, a wrong shape or dtype, a confidence outside [0, 1], an empty or duplicated id, no
    image at all, an id not in the test set."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{WHAT} {path} does not exist")
    most = MAX_TILES if test_ids is None else len(test_ids)
    arrays = read_npz(path, ARRAYS + PROVENANCE, WHAT, lambda declared: _check_declared(path, declared, most))
    ids = arrays["ids"]
    if (np.char.str_len(ids) == 0).any():
        raise DataError(f"{path}: id number {int(np.argmax(np.char.str_len(ids) == 0))} is empty")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) < len(ids):
        raise DataError(f"{path}: id {excerpt(unique[counts > 1][0])} appears {counts[counts > 1][0]} times "
                        f"({int((counts > 1).sum())} duplicated ids); each image has one label")
    masks = arrays["masks"]
    conf = arrays["confidence"]
    bad = np.flatnonzero(~((conf >= 0) & (conf <= 1)))
    if bad.size:
        raise DataError(f"{path}: confidence of id {excerpt(ids[bad[0]])} is {conf[bad[0]]}, not in [0, 1] "
                        f"({bad.size} such values)")
    provenance = {key: str(arrays[key]) for key in PROVENANCE}
    if test_ids is not None:
        unknown = ids[~np.isin(ids, np.asarray(test_ids, dtype=str))]
        if unknown.size:
            raise DataError(f"{path}: {unknown.size} ids are not in the test set: {few(unknown, 3)} (pseudo-labels "
                            "are made of this data set's test images)")
    return PseudoLabels(ids, masks, conf.astype(np.float32), provenance)


def _check_declared(path: Path, declared: dict, most: int) -> None:
    """The arrays' declared shapes and dtypes (read before anything is decompressed): at least one and at most
    ``most`` ids (the test set's size, when known), one bool mask and one float per id, bounded strings."""
    n = check_strings(path, "ids", declared["ids"], 1, most)
    if n == 0:
        raise DataError(f"{path} holds no pseudo-labels (no ids)")
    masks, conf = declared["masks"], declared["confidence"]
    if masks.dtype != bool or masks.shape != (n, TILE, TILE):
        raise DataError(f"{path}: 'masks' must be bool of shape ({n}, {TILE}, {TILE}) (one mask per id), "
                        f"got {masks.dtype} {masks.shape}")
    if conf.dtype.kind != "f" or conf.shape != (n,):
        raise DataError(f"{path}: 'confidence' must be float of shape ({n},) (one per id), got "
                        f"{conf.dtype} {conf.shape}")
    for key in PROVENANCE:
        check_strings(path, key, declared[key], 0)


def digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of the file: what a training run records of the labels it saw."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def summary(labels: PseudoLabels, total: int | None = None) -> list[str]:
    """Lines: how many images (of ``total``), how many empty, the histogram of predicted coverage."""
    n = len(labels)
    bins = np.bincount(coverage_bin(labels.masks), minlength=len(BIN_NAMES)) if n else np.zeros(len(BIN_NAMES), int)
    of = f" of {total} test images ({n / total:.1%})" if total else ""
    lines = [f"pseudo-labels: {n} images{of}; {int(bins[0])} empty ({bins[0] / max(n, 1):.1%}); "
             f"mean confidence {float(labels.confidence.mean()) if n else 0.0:.4f}",
             "predicted salt coverage:"]
    lines += [f"  {name:>7s} {int(k):7d} {k / max(n, 1):7.1%}" for name, k in zip(BIN_NAMES, bins)]
    return lines
