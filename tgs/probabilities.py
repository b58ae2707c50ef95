"""Saved predictions: per-id 101x101 salt probabilities in a compact ``.npz`` (never a pickle).

Arrays in the file (read with :func:`tgs.io.read_npz`: no pickle, and every declared shape checked before anything
is decompressed):

- ``ids``: (N,) unicode strings;
- ``probs``: (N, 101, 101) uint8, the probability times 255, rounded (error at most 0.002);
- ``image_probs``: (N,) float32, the image-level "has salt" probability (NaN where unknown);
- ``models``: (M,) unicode strings, the checkpoints averaged into it (may be empty);
- ``split``: 0-d unicode string, ``test`` or ``valid`` (out-of-fold predictions of train images).

Writing is atomic. :class:`RunningMean` averages any number of prediction sets with memory that does not grow
with the number of models.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tgs import TILE
from tgs.errors import DataError, UserError, excerpt
from tgs.io import atomic_path, check_strings, read_npz

IMAGE_SHAPE = (TILE, TILE)

SCALE = 255.0
SPLITS = ("test", "valid")  # the values of the ``split`` array
ARRAYS = ("ids", "probs", "image_probs", "models", "split")  # all written by save


@dataclass
class Probabilities:
    ids: np.ndarray  # (N,) str
    probs: np.ndarray  # (N, 101, 101) float32 in [0, 1]
    image_probs: np.ndarray  # (N,) float32
    models: list[str] = field(default_factory=list)
    split: str = "test"

    def __len__(self) -> int:
        return len(self.ids)


_CHUNK = 1024  # images per block: float temporaries stay small whatever the set's size


def quantize(probs: np.ndarray) -> np.ndarray:
    """uint8 levels (probability x 255, rounded), block by block along the first axis so that the float
    temporaries stay small whatever the set's size; uint8 input is returned as it is."""
    probs = np.asarray(probs)
    if probs.dtype == np.uint8:
        return probs
    if probs.ndim == 0:
        return quantize(probs[None])[0]
    out = np.empty(probs.shape, np.uint8)
    for first in range(0, len(probs), _CHUNK):
        block = probs[first:first + _CHUNK].astype(np.float32, copy=False) * SCALE
        out[first:first + _CHUNK] = np.clip(np.rint(block), 0, SCALE)
    return out


LEVELS = 256  # the uint8 levels: level q stands for probability q / 255
_HIST_BLOCK = 256  # images per bincount block (bounds the int64 index array to ~2.6M entries at 101x101)


def level_of(threshold: float) -> int:
    """The cut ``k``: level ``q >= k`` exactly where ``q / 255`` (float32, as :func:`load` gives it) is
    ``> threshold``; ``LEVELS`` when no level is."""
    values = np.arange(LEVELS, dtype=np.float32) / np.float32(SCALE)
    return int(np.count_nonzero(~(values > np.float32(threshold))))


def level_histograms(q: np.ndarray, truth: np.ndarray, block: int = _HIST_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the counts of each level over all pixels and over true salt pixels: (N, 256) int64 each, from
    uint8 levels (N, H, W) and bool masks (N, H, W). One ``bincount`` per ``block`` images over
    ``image * 256 + q`` (no loop per image or pixel); the block size bounds the memory, not the result."""
    n = len(q)
    flat_q, flat_t = q.reshape(n, -1), truth.reshape(n, -1)
    all_hist = np.zeros((n, LEVELS), np.int64)
    salt_hist = np.zeros((n, LEVELS), np.int64)
    for s in range(0, n, block):
        e = min(n, s + block)
        index = (np.arange(e - s, dtype=np.int64)[:, None] * LEVELS + flat_q[s:e]).ravel()
        size = (e - s) * LEVELS
        all_hist[s:e] = np.bincount(index, minlength=size).reshape(e - s, LEVELS)
        salt_hist[s:e] = np.bincount(index[flat_t[s:e].ravel()], minlength=size).reshape(e - s, LEVELS)
    return all_hist, salt_hist


def at_least(hist: np.ndarray) -> np.ndarray:
    """Counts of ``q >= k`` for k = 0..256 along the last axis of level histograms (reversed cumulative sum, 0
    appended for k = 256)."""
    rev = np.cumsum(hist[..., ::-1], axis=-1)[..., ::-1]
    return np.concatenate([rev, np.zeros(hist.shape[:-1] + (1,), rev.dtype)], axis=-1)


def save(path: str | os.PathLike, ids: Sequence[str], probs: np.ndarray, image_probs: np.ndarray | None = None,
         models: Sequence[str] = (), split: str = "test", atomic: bool = True) -> Path:
    """Write predictions atomically (``atomic=False``: straight to ``path``, for a caller that commits a set of
    files itself, tgs.io.atomic_paths); ``probs`` float in [0, 1] (or already-quantised uint8)."""
    ids = np.asarray(ids, dtype=str)
    probs = np.asarray(probs)
    if probs.ndim != 3 or len(probs) != len(ids):
        raise ValueError(f"expected probs of shape ({len(ids)}, H, W), got {probs.shape}")
    q = quantize(probs)
    img = (np.full(len(ids), np.nan, np.float32) if image_probs is None
           else np.asarray(image_probs, dtype=np.float32).reshape(len(ids)))
    path = Path(path)
    with (atomic_path(path) if atomic else contextlib.nullcontext(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, ids=ids, probs=q, image_probs=img, models=np.asarray(list(models), dtype=str),
                                split=np.asarray(split))
    return path


def load(path: str | os.PathLike) -> Probabilities:
    """Read a predictions file written by :func:`save`. Anything else (a missing, truncated or corrupt file, a
    pickle, a missing array, a wrong shape, dtype or value) is a one-line error naming the file and what is
    wrong, never a traceback and never silently accepted (predictions of 50x50 tiles would make a submission
    that looks valid)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"probabilities file {path} does not exist")
    arrays = read_npz(path, ARRAYS, "probabilities file", lambda declared: _check_declared(path, declared))
    ids = _checked_ids(path, arrays["ids"])
    q = arrays["probs"]
    img = _checked_image_probs(path, arrays["image_probs"], ids)
    models = arrays["models"]
    split = arrays["split"]
    if str(split) not in SPLITS:
        raise DataError(f"{path}: 'split' must be one of {', '.join(SPLITS)}, got {excerpt(str(split))}")
    return Probabilities(ids, q.astype(np.float32) / SCALE, img, models.tolist(), str(split))


def split_of(path: str | os.PathLike) -> str | None:
    """The ``split`` of a predictions file, reading that array alone (bounded before it is read); None when the
    file is not a readable predictions file."""
    def small(declared: dict) -> None:
        _check_split(path, declared["split"])

    try:
        return str(read_npz(path, ("split",), "probabilities file", small)["split"])
    except (DataError, OSError):
        return None


def _check_split(path, split) -> None:
    if split.shape != () or split.dtype.kind != "U" or split.dtype.itemsize > 4 * max(map(len, SPLITS)):
        raise DataError(f"{path}: 'split' must be one of {', '.join(SPLITS)}, got {split.dtype} {split.shape}")


def _check_declared(path: Path, declared: dict) -> None:
    """The arrays' declared shapes and dtypes (read before anything is decompressed): one uint8 tile and one float
    per id, at most :data:`tgs.io.MAX_TILES` ids, strings of bounded length."""
    n = check_strings(path, "ids", declared["ids"], 1)
    if n == 0:
        raise DataError(f"{path} holds no predictions (no ids)")
    q = declared["probs"]
    if q.dtype != np.uint8 or q.shape != (n, *IMAGE_SHAPE):
        raise DataError(f"{path}: 'probs' must be uint8 of shape ({n}, {IMAGE_SHAPE[0]}, {IMAGE_SHAPE[1]}) "
                        f"(one {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} tile per id), got {q.dtype} {q.shape}")
    img = declared["image_probs"]
    if img.dtype.kind != "f" or img.shape != (n,):
        raise DataError(f"{path}: 'image_probs' must be float of shape ({n},) (one per id), got {img.dtype} "
                        f"{img.shape}")
    check_strings(path, "models", declared["models"], 1)
    _check_split(path, declared["split"])


def _checked_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    """``ids`` (a non-empty 1-D array of strings: :func:`_check_declared`): distinct and non-empty."""
    empty = np.flatnonzero(np.char.str_len(ids) == 0)
    if empty.size:
        raise DataError(f"{path}: id number {empty[0]} is empty ({empty.size} empty ids)")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) < len(ids):
        dup = unique[counts > 1]
        raise DataError(f"{path}: id {excerpt(dup[0])} appears {counts[counts > 1][0]} times "
                        f"({dup.size} duplicated ids); each image is predicted once")
    return ids


def _checked_image_probs(path: Path, img: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``image_probs`` (float (N,): :func:`_check_declared`): each value in [0, 1] or NaN (unknown); as float32."""
    bad = np.flatnonzero(~(np.isnan(img) | ((img >= 0) & (img <= 1))))
    if bad.size:
        raise DataError(f"{path}: image probability of id {excerpt(ids[bad[0]])} is {img[bad[0]]}, not in [0, 1] "
                        f"or NaN ({bad.size} such values)")
    return img.astype(np.float32)


class RunningMean:
    """The NaN-aware running mean of prediction sets for the same images, one set (or one batch of a set) at a
    time: one float32 (N, H, W) sum of pixel probabilities and one float64 (N,) sum of image probabilities, so
    memory does not grow with the number of sets. An image probability unknown (NaN, or none given) in any set is
    unknown (NaN) in the mean. Used for saved files (:meth:`add`) and, batch by batch, for models predicting in
    turn (:meth:`add_batch` then :meth:`close_set`: ``engine.inference.Ensemble``)."""

    def __init__(self, ids: Sequence[str] | None = None, shape: tuple | None = None):
        self.ids: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.image_sum: np.ndarray | None = None
        self.image_known: np.ndarray | None = None
        self.count = 0
        self.models: list[str] = []
        if ids is not None:
            self._start(np.asarray(ids, dtype=str), shape)

    def _start(self, ids: np.ndarray, shape: tuple) -> None:
        self.ids = ids
        self.sum = np.zeros(shape, np.float32)
        self.image_sum = np.zeros(len(ids), np.float64)
        self.image_known = np.ones(len(ids), bool)

    def add_batch(self, first: int, probs, image_probs=None, count: int | None = None) -> None:
        """Add the probabilities of images ``first .. first+count-1`` of the current set (numpy arrays or CPU
        tensors; ``image_probs`` None: unknown). ``probs`` None: the caller added the pixel probabilities into
        :attr:`sum` itself (e.g. through a torch view of it, in place), and ``count`` says how many images."""
        end = first + (len(probs) if probs is not None else int(count))
        if probs is not None:
            self.sum[first:end] += np.asarray(probs, dtype=np.float32)
        if image_probs is None:
            self.image_known[first:end] = False
        else:
            image_probs = np.asarray(image_probs, np.float64)
            self.image_known[first:end] &= np.isfinite(image_probs)
            self.image_sum[first:end] += np.nan_to_num(image_probs, nan=0.0)

    def close_set(self, source: str = "") -> None:
        """One set (every image) has been added."""
        self.count += 1
        if source:
            self.models.append(source)

    def add(self, ids: Sequence[str], probs: np.ndarray, image_probs: np.ndarray | None = None,
            source: str = "") -> None:
        """A whole set; its ids must be the first set's."""
        ids = np.asarray(ids, dtype=str)
        if self.ids is None:
            self._start(ids, probs.shape)
        elif not np.array_equal(ids, self.ids):
            raise UserError(f"{source or 'predictions'}: its ids differ from the first set's "
                            f"({len(ids)} vs {len(self.ids)} ids); only predictions of the same images can be averaged")
        self.add_batch(0, probs, image_probs)
        self.close_set(source)

    def mean(self) -> Probabilities:
        """The mean; the sum becomes the mean in place (no second (N, H, W) array), so call it once, at the end."""
        if self.count == 0:
            raise UserError("nothing to average")
        if self.count > 1:
            self.sum *= np.float32(1.0 / self.count)
        image = np.where(self.image_known, self.image_sum / self.count, np.nan).astype(np.float32)
        self.count, self.image_sum = 1, np.nan_to_num(image).astype(np.float64)
        return Probabilities(self.ids, self.sum, image, list(self.models))
