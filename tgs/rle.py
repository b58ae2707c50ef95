"""Kaggle's run-length encoding for the TGS salt masks, vectorised over a batch.

Format (the competition's): pixels are numbered from 1, top to bottom then left to right (column-major), and a
mask is written as ``start length`` pairs of its runs of salt pixels, in increasing order, separated by single
spaces. An empty mask is the empty string.

``encode`` and ``decode`` handle a whole batch with numpy operations and C-level string routines: there is no
Python loop per image or per pixel. ``decode`` validates what it reads and raises :class:`RLEError` naming the
id of the first bad entry.
"""
from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from tgs.errors import DataError

SHAPE = (101, 101)
_CHUNK = 128  # images per block in encode(): about 1.3 MB of temporaries


class RLEError(DataError):
    """An RLE string that is not valid; the message names the id."""


def encode(masks: np.ndarray) -> list[str]:
    """Encode masks of shape (N, H, W) (or one (H, W) mask) to a list of N RLE strings.

    Any non-zero value is salt.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    n, h, w = masks.shape
    if n == 0:
        return []
    hw = h * w
    # Column-major pixel order: transpose each image to (W, H) and flatten it, between two zero pixels so that
    # every row starts and ends outside a run. Transitions then alternate start, end, start, end, ... within a row
    # and therefore across the whole batch. Chunks of images keep the temporaries in cache (memory-bound work).
    buf = np.zeros((min(n, _CHUNK), hw + 2), dtype=bool)
    changes = []
    for first in range(0, n, _CHUNK):
        chunk = masks[first:first + _CHUNK]
        k = chunk.shape[0]
        buf[:k, 1:-1] = chunk.transpose(0, 2, 1).reshape(k, hw) != 0
        changes.append(np.flatnonzero(buf[:k, 1:] != buf[:k, :-1]) + first * (hw + 1))
    change = np.concatenate(changes)
    if change.size == 0:
        return [""] * n
    row = change[0::2] // (hw + 1)
    start = change[0::2] % (hw + 1) + 1  # 1-based first pixel of the run
    length = change[1::2] - change[0::2]
    return _join_runs(row, start, length, n)


def _join_runs(row: np.ndarray, start: np.ndarray, length: np.ndarray, n: int) -> list[str]:
    """Build one string per image from runs sorted by image, without a Python loop per image.

    Every image becomes a section ending in a newline: its tokens separated by spaces, or just the newline for an
    image without runs. The sections are concatenated with one ``str.join`` and split back with ``str.split``.
    """
    tokens = np.empty(2 * row.size, dtype=np.int64)
    tokens[0::2] = start
    tokens[1::2] = length
    token_row = np.repeat(row, 2)
    last = np.ones(tokens.size, dtype=bool)  # last token of its image: followed by a newline
    last[:-1] = token_row[1:] != token_row[:-1]
    empty = np.flatnonzero(np.bincount(row, minlength=n) == 0)
    # An image without runs gets one empty token, so that it still produces its newline.
    order = np.argsort(np.concatenate([token_row, empty]), kind="stable")
    words = np.array(list(map(str, tokens.tolist())) + [""] * empty.size, dtype=object)[order]
    seps = np.where(np.concatenate([last, np.ones(empty.size, dtype=bool)]), "\n", " ").astype(object)[order]
    text = "".join(map(operator.add, words.tolist(), seps.tolist()))
    return text.split("\n")[:-1]


def decode(rles: Sequence[str], ids: Sequence[str] | None = None, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Decode N RLE strings to a bool array (N, H, W), validating every string.

    ``ids`` (same length) name the offending entry in errors; without them the row number is used.
    Raises :class:`RLEError` for: a token that is not a non-negative integer, an odd number of values, a start or
    length below 1, runs out of order or overlapping, and a run past the last pixel.
    """
    rles = ["" if r is None else r for r in rles]
    n = len(rles)
    h, w = shape
    hw = h * w
    out = np.zeros((n, w * h), dtype=bool)
    if n == 0:
        return out.reshape(0, h, w)
    name = (lambda i: f"id {ids[i]}") if ids is not None else (lambda i: f"row {i}")

    # One pass over all strings: '|' marks the end of each image, whitespace separates tokens.
    text = " | ".join(rles) + " |"
    tokens = np.asarray(text.split())
    is_sep = tokens == "|"
    image_of_token = np.cumsum(is_sep) - is_sep  # image index of every token (separators belong to theirs)
    values = tokens[~is_sep]
    value_image = image_of_token[~is_sep]
    if values.size == 0:
        return out.reshape(n, w, h).transpose(0, 2, 1).copy()

    bad = ~np.char.isdigit(values)
    if bad.any():
        j = int(np.argmax(bad))
        raise RLEError(f"{name(value_image[j])}: RLE value {str(values[j])!r} is not a positive integer")
    counts = np.bincount(value_image, minlength=n)
    odd = np.flatnonzero(counts % 2)
    if odd.size:
        raise RLEError(f"{name(odd[0])}: RLE has an odd number of values ({counts[odd[0]]}); "
                       "expected 'start length' pairs")
    # Values may exceed int64 only in absurd input; those are past the last pixel anyway.
    lens_ok = np.char.str_len(values) <= 18
    if not lens_ok.all():
        j = int(np.argmax(~lens_ok))
        raise RLEError(f"{name(value_image[j])}: RLE value {values[j]} is past the last pixel {hw}")
    nums = values.astype(np.int64)
    start, length = nums[0::2], nums[1::2]
    run_image = value_image[0::2]

    nonpos = (start < 1) | (length < 1)
    if nonpos.any():
        j = int(np.argmax(nonpos))
        raise RLEError(f"{name(run_image[j])}: RLE run '{start[j]} {length[j]}' has a value below 1")
    end = start + length - 1  # last pixel of the run, 1-based
    past = end > hw
    if past.any():
        j = int(np.argmax(past))
        raise RLEError(f"{name(run_image[j])}: RLE run '{start[j]} {length[j]}' ends at pixel {end[j]}, "
                       f"past the last pixel {hw} of a {h}x{w} image")
    same = run_image[1:] == run_image[:-1]
    disorder = same & (start[1:] <= end[:-1])
    if disorder.any():
        j = int(np.argmax(disorder)) + 1
        raise RLEError(f"{name(run_image[j])}: RLE run starting at {start[j]} is out of order or overlaps the "
                       f"previous run ({start[j - 1]} {length[j - 1]})")

    # Flat indices of every salt pixel: runs are disjoint, so a repeat + arange fills them without a loop.
    offset = run_image * hw + (start - 1)
    total = int(length.sum())
    run_first = np.cumsum(length) - length
    idx = np.repeat(offset - run_first, length) + np.arange(total)
    out.reshape(-1)[idx] = True
    return out.reshape(n, w, h).transpose(0, 2, 1).copy()
