"""Kaggle's run-length encoding for the TGS salt masks, vectorised over a batch.

Format (the competition's): pixels are numbered from 1, top to bottom then left to right (column-major), and a
mask is written as ``start length`` pairs of its runs of salt pixels, in increasing order, separated by single
spaces. An empty mask is the empty string.

``encode`` and ``decode`` handle a whole batch with numpy operations and C-level string routines: there is no
Python loop per image or per pixel. ``decode`` treats its input as untrusted and raises :class:`RLEError` naming
the id of the first bad entry: a string longer than the longest valid RLE of the shape (:func:`longest`) is
refused before anything is split or allocated, only ASCII digits separated by single spaces are accepted, and
the text is parsed in blocks of bounded size, so memory stays proportional to what a valid input could hold.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from tgs import TILE
from tgs.errors import DataError, excerpt

SHAPE = (TILE, TILE)
_CHUNK = 128  # images per block in encode(): about 1.3 MB of temporaries
_BLOCK = 1 << 20  # characters per block in decode(): about 10 MB of temporaries
_SPACE, _ZERO = ord(" "), ord("0")


class RLEError(DataError):
    """An RLE string that is not valid; the message names the id."""


@functools.lru_cache(maxsize=None)
def longest(shape: tuple[int, int] = SHAPE) -> int:
    """Characters in the longest valid RLE of an (H, W) mask: 35252 for 101x101.

    Splitting a run into one-pixel runs never shortens the text, and every run but the last needs a free pixel
    after it, so the longest RLE has ceil(HW / 2) one-pixel runs ('start 1'); it is longest with the runs as far
    back as they fit, on pixels HW, HW - 2, HW - 4, ..., whose numbers have the most digits.
    """
    hw = shape[0] * shape[1]
    starts = np.arange(hw, 0, -2)
    start_digits = starts.size + sum(int((starts >= 10 ** p).sum()) for p in range(1, len(str(hw))))
    return start_digits + starts.size + 2 * starts.size - 1  # + the lengths ('1') + the spaces between values


@functools.lru_cache(maxsize=4)
def _token_table(hw: int) -> tuple[np.ndarray, np.ndarray]:
    """The ASCII text of 0..hw followed by a space, and followed by a newline, as fixed-width NUL-padded records
    (one numpy element each: a uint64 up to 7 digits), for building the text of many tokens with one gather."""
    width = len(str(hw)) + 1
    size = max(width, 8)
    text = np.zeros((2, hw + 1, size), dtype=np.uint8)
    for i, sep in enumerate((" ", "\n")):
        words = np.char.add(np.arange(hw + 1).astype(str), sep).astype(f"S{width}")  # NUL-padded bytes
        text[i, :, :width] = words.view(np.uint8).reshape(hw + 1, width)
    records = text.view(np.uint64 if size == 8 else np.dtype((np.void, size)))[..., 0]
    return records[0], records[1]


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
    # Assigning into the bool buffer casts, and numpy's cast to bool is exactly "non-zero".
    buf = np.zeros((min(n, _CHUNK), hw + 2), dtype=bool)
    pixels = buf[:, 1:-1].reshape(-1, w, h)  # a view: the transposed images are copied straight into buf
    changes = []
    for first in range(0, n, _CHUNK):
        chunk = masks[first:first + _CHUNK]
        k = chunk.shape[0]
        pixels[:k] = chunk.transpose(0, 2, 1)
        changes.append(np.flatnonzero(buf[:k, 1:] != buf[:k, :-1]) + first * (hw + 1))
    change = np.concatenate(changes)
    if change.size == 0:
        return [""] * n
    row = change[0::2] // (hw + 1)
    start = change[0::2] % (hw + 1) + 1  # 1-based first pixel of the run
    length = change[1::2] - change[0::2]
    return _join_runs(row, start, length, n, hw)


def _join_runs(row: np.ndarray, start: np.ndarray, length: np.ndarray, n: int, hw: int) -> list[str]:
    """Build one string per image from runs sorted by image, without a Python loop per image or per token.

    Every token becomes a fixed-width record from :func:`_token_table` (its digits, then a space, or a newline
    after the last token of an image, then NUL padding); dropping the NULs of all records leaves the text of all
    images, newline-terminated, which ``str.split`` cuts into the strings of the images that have runs.
    """
    with_space, with_newline = _token_table(hw)
    last = np.ones(row.size, dtype=bool)  # last run of its image: its length is followed by a newline
    last[:-1] = row[1:] != row[:-1]
    records = np.empty(2 * row.size, dtype=with_space.dtype)
    records[0::2] = with_space[start]
    records[1::2] = with_space[length]
    records[1::2][last] = with_newline[length[last]]
    raw = records.view(np.uint8)
    out = np.full(n, "", dtype=object)
    out[row[last]] = raw[raw != 0].tobytes().decode("ascii").split("\n")[:-1]
    return out.tolist()


def decode(rles: Sequence[str], ids: Sequence[str] | None = None, shape: tuple[int, int] = SHAPE,
           block: int = _BLOCK) -> np.ndarray:
    """Decode N RLE strings to a bool array (N, H, W), validating every string, in blocks of whole strings of
    about ``block`` characters (the block size bounds the memory, not the result).

    ``ids`` (same length) name the offending entry in errors; without them the row number is used. ``None``
    stands for an empty mask. Raises :class:`RLEError` for: a string longer than any valid RLE of ``shape``
    (checked first, before any splitting or allocation), a character other than an ASCII digit or a space, a
    leading, trailing or double space, a value with more digits than the last pixel's number, an odd number of
    values, a start or length below 1, runs out of order or overlapping, and a run past the last pixel.
    """
    rles = list(rles)
    if None in rles:
        rles = ["" if r is None else r for r in rles]
    n = len(rles)
    h, w = shape
    hw = h * w
    name = _namer(ids)
    lengths = np.fromiter(map(len, rles), dtype=np.int64, count=n)
    too_long = np.flatnonzero(lengths > longest(shape))
    if too_long.size:
        i = int(too_long[0])
        raise RLEError(f"{name(i)}: RLE {excerpt(rles[i])} is longer than any valid RLE of a {h}x{w} image "
                       f"(at most {longest(shape)} characters)")
    if n == 0:
        return np.zeros((0, h, w), dtype=bool)
    # Blocks of whole strings of about ``block`` characters each (one string is at most longest(shape) characters).
    ends = np.cumsum(lengths)
    cuts = np.unique(np.concatenate([[0], np.searchsorted(ends, np.arange(block, ends[-1], block)) + 1, [n]]))
    blocks = zip(cuts[:-1].tolist(), cuts[1:].tolist())
    parts = [_tokenise(rles[a:b], lengths[a:b], a, name, shape) for a, b in blocks]
    values = np.concatenate([p[0] for p in parts])
    value_image = np.concatenate([p[1] for p in parts])
    if values.size == 0:
        return np.zeros((n, h, w), dtype=bool)

    counts = np.bincount(value_image, minlength=n)
    odd = np.flatnonzero(counts % 2)
    if odd.size:
        raise RLEError(f"{name(odd[0])}: RLE has an odd number of values ({counts[odd[0]]}); "
                       "expected 'start length' pairs")
    start, length = values[0::2], values[1::2]
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
    offset = run_image.astype(np.int64) * hw + (start - 1)
    run_first = np.cumsum(length, dtype=np.int64) - length
    total = int(run_first[-1] + length[-1])
    idx = np.repeat(offset - run_first, length) + np.arange(total)
    out = np.zeros((n, w * h), dtype=bool)
    out.reshape(-1)[idx] = True
    return out.reshape(n, w, h).transpose(0, 2, 1).copy()


def _namer(ids: Sequence[str] | None):
    """``name(i)``: how errors call entry ``i``: ``id X`` (an excerpt if the id is long or odd), else ``row i``."""
    if ids is None:
        return lambda i: f"row {i}"

    def name(i) -> str:
        ident = str(ids[i])
        return f"id {ident}" if len(ident) <= 40 and ident.isprintable() else f"id {excerpt(ident)}"

    return name


def _tokenise(block: Sequence[str], size: np.ndarray, first: int, name,
              shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The values of the strings ``block`` (entries ``first``, ``first + 1``, ... of the batch; ``size`` their
    lengths) and the entry of each value, as int32 arrays (a value has at most as many digits as H * W).

    Every character is checked before anything is split: only ASCII digits, single spaces between values, and
    values of at most as many digits as the last pixel's number (so the conversion cannot overflow).
    """
    text = "".join(block)
    if not text.isascii():
        i = int(np.argmin(np.fromiter(map(str.isascii, block), dtype=bool, count=len(block))))
        _refuse_character(block[i], next(p for p, c in enumerate(block[i]) if not c.isascii()), name(first + i))
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    entry = np.flatnonzero(size)  # the non-empty strings: index in the block, first and one-past-last character
    ends = np.cumsum(size)[entry]
    starts = ends - size[entry]

    def located(p: int) -> tuple[str, str, int]:
        """(name, text, start) of the non-empty string holding character ``p`` of ``text``."""
        i = int(np.searchsorted(ends, p, side="right"))
        return name(first + int(entry[i])), text[starts[i]:ends[i]], int(starts[i])

    digit = (raw - _ZERO) < 10  # uint8 arithmetic: characters below '0' wrap around to large values
    space = raw == _SPACE
    bad = ~(digit | space)
    if bad.any():
        p = int(np.argmax(bad))
        who, s, start = located(p)
        _refuse_character(s, p - start, who)
    after_gap = np.ones(raw.size, dtype=bool)  # preceded by a space, or the first character of its string
    after_gap[1:] = space[:-1]
    after_gap[starts] = True
    before_gap = np.ones(raw.size, dtype=bool)  # followed by a space, or the last character of its string
    before_gap[:-1] = space[1:]
    before_gap[ends - 1] = True
    bad_space = space & (after_gap | before_gap)
    if bad_space.any():
        p = int(np.argmax(bad_space))
        who, s, start = located(p)
        where = ("starts with a space" if p == start else "ends with a space" if p == start + len(s) - 1
                 else f"has two spaces in a row at character {p - start + 1}")
        raise RLEError(f"{who}: RLE {excerpt(s)} {where}; values are separated by single spaces")
    value_start = np.flatnonzero(digit & after_gap)
    digits = np.flatnonzero(digit & before_gap) + 1 - value_start
    h, w = shape
    max_digits = len(str(h * w))
    if (digits > max_digits).any():
        j = int(np.argmax(digits > max_digits))
        who = located(int(value_start[j]))[0]
        value = text[value_start[j]:value_start[j] + digits[j]]
        raise RLEError(f"{who}: RLE value {excerpt(value)} has {digits[j]} digits, past the last pixel {h * w} "
                       f"of a {h}x{w} image")
    values = np.zeros(value_start.size, dtype=np.int32)
    for k in range(max_digits):  # one pass per digit position, over all values at once
        digit_k = raw[np.minimum(value_start + k, raw.size - 1)] - _ZERO
        values = np.where(digits > k, values * 10 + digit_k, values)
    return values, (entry[np.searchsorted(ends, value_start, side="right")] + first).astype(np.int32)


def _refuse_character(s: str, p: int, who: str) -> None:
    """Raise the error for character ``p`` of RLE ``s``, neither an ASCII digit nor a space, quoting its value."""
    left, right = s.rfind(" ", 0, p) + 1, s.find(" ", p)
    value = s[left:right if right >= 0 else len(s)]
    raise RLEError(f"{who}: RLE value {excerpt(value)} is not a positive integer ({s[p]!r} at character {p + 1}; "
                   "an RLE holds only ASCII digits separated by single spaces)")
