"""The mosaic layout: which tiles sit next to which, as `mosaics.csv` and `pairs.csv` (written by mosaic.py).

``mosaics.csv`` (header exactly ``id,mosaic,row,col``) places every tile that has at least one neighbour: tiles of
one mosaic were cut from one section, tile (row, col + 1) is the right neighbour of (row, col) and (row + 1, col)
the one below. ``pairs.csv`` (``a,b,rel,score``) lists the matched edges behind it: ``LR`` means a is left of b,
``TB`` a above b; ``score`` is the edges' similarity (1 is a perfect match).

:class:`Mosaics` owns the layout as :class:`tgs.inputs.InputSpec` owns the input geometry: reading and validating
the file, writing it atomically, and the vectorised queries that post-processing rules need (each tile's neighbour
above / below / left / right, the grid of each mosaic, all adjacent pairs).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from tgs.errors import DataError, excerpt, few
from tgs.io import atomic_open, read_csv_strings

COLUMNS = ("id", "mosaic", "row", "col")
PAIR_COLUMNS = ("a", "b", "rel", "score")
RELATIONS = ("LR", "TB")  # LR: a is left of b; TB: a is above b
STEP = {"LR": (0, 1), "TB": (1, 0)}  # (row, col) of b minus that of a
MOSAICS_FILE = "mosaics.csv"
PAIRS_FILE = "pairs.csv"


def _integers(df: pd.DataFrame, column: str, path) -> np.ndarray:
    """A column of non-negative integers, or a DataError naming the first bad row."""
    text = df[column]
    ok = text.str.fullmatch(r"\+?\d{1,9}").to_numpy(bool)
    if not ok.all():
        row = int(np.argmax(~ok))
        raise DataError(f"{path}: line {row + 2} (id {excerpt(df['id'].iloc[row])}): {column} "
                        f"{excerpt(text.iloc[row])} is not a non-negative integer")
    return text.to_numpy(str).astype(np.int64)


def _check_known(ids: np.ndarray, known_ids, path) -> None:
    """Every id must belong to the dataset; mostly unknown ids mean a file made for another dataset."""
    if known_ids is None or len(ids) == 0:
        return
    unknown = ~np.isin(ids, np.asarray(known_ids, str))
    if not unknown.any():
        return
    bad = few([str(x)[:24] for x in pd.unique(ids[unknown])], 3)
    n_bad, n_all = len(pd.unique(ids[unknown])), len(pd.unique(ids))
    if unknown.mean() > 0.5:
        raise DataError(f"{path}: {n_bad} of its {n_all} ids are not in this dataset (first {bad}): the file belongs "
                        "to another dataset; rebuild it with `python mosaic.py --data-dir DATA --out DIR`")
    raise DataError(f"{path}: {n_bad} of its {n_all} ids are not in this dataset's train or test ids: {bad}")


MAX_POSITION = 65_535  # rows and columns at most: a mosaic of all 22000 Kaggle tiles spans at most 21999 steps
MAX_CELLS = 20_000_000  # bounding-box cells of all mosaics together at most (their grids: 160 MB of int64)


def _check_bounds(mosaic: np.ndarray, row: np.ndarray, col: np.ndarray, path) -> None:
    """Refuse layouts whose numbers no tile set needs and every consumer would pay for in memory: a mosaic number
    beyond the file's tile count (mosaics are numbered from 0, so a file of N tiles needs fewer than N), a row or
    column beyond MAX_POSITION, or mosaics whose bounding boxes hold more than MAX_CELLS cells together."""
    n = len(mosaic)
    for name, values, limit in (("mosaic", mosaic, n - 1), ("row", row, MAX_POSITION), ("col", col, MAX_POSITION)):
        bad = np.flatnonzero(values > limit)
        if bad.size:
            why = (f"its {n} tiles need mosaic numbers 0 to {n - 1} at most" if name == "mosaic" else
                   f"at most {MAX_POSITION} (more than any set of tiles needs)")
            raise DataError(f"{path}: line {bad[0] + 2}: {name} {values[bad[0]]} is too large: {why}")
    if n:
        _, inverse = np.unique(mosaic, return_inverse=True)
        m = int(inverse.max()) + 1
        span = [np.zeros(m, np.int64) for _ in range(4)]
        span[0][:], span[1][:] = MAX_POSITION + 1, MAX_POSITION + 1
        np.minimum.at(span[0], inverse, row)
        np.minimum.at(span[1], inverse, col)
        np.maximum.at(span[2], inverse, row)
        np.maximum.at(span[3], inverse, col)
        cells = int(((span[2] - span[0] + 1) * (span[3] - span[1] + 1)).sum())
        if cells > MAX_CELLS:
            raise DataError(f"{path}: the mosaics' tiles lie so far apart that their grids would hold {cells} cells "
                            f"(at most {MAX_CELLS}): not a layout of neighbouring tiles")


def cell_lookup(mosaic, row, col) -> Callable[..., np.ndarray]:
    """A lookup of a layout's cells, built once: ``at(mosaic, row, col)`` gives, for each queried cell, the index
    of the tile on it (-1 for an empty cell). Cells are keyed by the ranks of their values among each column's
    distinct values, so no position can overflow into another's key whatever the numbers; a query is a binary
    search per column and one into the sorted keys. (Where two tiles share a cell, either is given.)"""
    columns = [np.asarray(x, np.int64).reshape(-1) for x in (mosaic, row, col)]
    values = [np.unique(c) for c in columns]

    def keys(cols) -> tuple[np.ndarray, np.ndarray]:
        key, known = np.zeros(len(cols[0]), np.int64), np.ones(len(cols[0]), bool)
        for c, v in zip(cols, values):
            i = np.minimum(np.searchsorted(v, c), max(len(v) - 1, 0))
            known &= v[i] == c if len(v) else False
            key = key * max(len(v), 1) + i
        return key, known

    own, _ = keys(columns)
    order = np.argsort(own, kind="stable")
    sorted_keys = own[order]

    def at(m, r, c) -> np.ndarray:
        want, known = keys([np.asarray(x, np.int64).reshape(-1) for x in (m, r, c)])
        if len(sorted_keys) == 0:
            return np.full(len(want), -1, np.int64)
        i = np.minimum(np.searchsorted(sorted_keys, want), len(sorted_keys) - 1)
        return np.where(known & (sorted_keys[i] == want), order[i], -1)
    return at


def collisions(mosaic: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """(K, 2) indices of tiles that share a (mosaic, row, col) position with the tile before them in sort order
    (a lexicographic sort: no key to overflow, whatever the numbers)."""
    mosaic, row, col = (np.asarray(x, np.int64) for x in (mosaic, row, col))
    order = np.lexsort((col, row, mosaic))
    m, r, c = mosaic[order], row[order], col[order]
    same = np.flatnonzero((m[1:] == m[:-1]) & (r[1:] == r[:-1]) & (c[1:] == c[:-1]))
    return np.stack([order[same], order[same + 1]], axis=1) if same.size else np.zeros((0, 2), np.int64)


@dataclass(frozen=True)
class Neighbours:
    """For each queried tile, the index (into the queried ids) of the tile above / below / left / right, or -1."""

    up: np.ndarray
    down: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def count(self) -> np.ndarray:
        """How many of the four neighbours each tile has among the queried ids."""
        return (np.stack([self.up, self.down, self.left, self.right]) >= 0).sum(axis=0)


@dataclass
class Mosaics:
    """Tiles with integer positions: ``ids`` (N,) str, ``mosaic``, ``row``, ``col`` (N,) int.

    Positions are unique: two tiles never share (mosaic, row, col). The file holds only tiles with at least one
    neighbour, but the object accepts any layout (a synthetic truth, for example, places isolated tiles too).
    """

    ids: np.ndarray
    mosaic: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=str)
        self.mosaic, self.row, self.col = (np.asarray(a, dtype=np.int64) for a in (self.mosaic, self.row, self.col))
        if not (len(self.ids) == len(self.mosaic) == len(self.row) == len(self.col)):
            raise ValueError("Mosaics: ids, mosaic, row and col must have one entry per tile")

    def __len__(self) -> int:
        return len(self.ids)

    # -- file ---------------------------------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike, known_ids=None) -> "Mosaics":
        """Read and validate a ``mosaics.csv``; ``known_ids`` (train + test ids) rejects ids of other datasets.

        Each problem is one DataError line naming the file: a wrong header, a field that is not a non-negative
        integer, an id listed twice, two ids at one position, unknown ids, or a file of another dataset.
        """
        df = read_csv_strings(path, COLUMNS)
        ids = df["id"].to_numpy(str)
        if (ids == "").any():
            raise DataError(f"{path}: line {int(np.argmax(ids == '')) + 2} has an empty id")
        mosaic, row, col = (_integers(df, c, path) for c in COLUMNS[1:])
        dup = pd.Index(ids).duplicated()
        if dup.any():
            raise DataError(f"{path}: {int(dup.sum())} ids are listed more than once, first {ids[dup][0]}")
        _check_known(ids, known_ids, path)
        _check_bounds(mosaic, row, col, path)
        out = cls(ids, mosaic, row, col)
        clash = out.collisions()
        if clash.size:
            i, j = clash[0]
            raise DataError(f"{path}: ids {ids[i]} and {ids[j]} are both at mosaic {mosaic[i]} row {row[i]} "
                            f"col {col[i]} ({len(clash)} such clashes)")
        return out

    def write(self, path: str | os.PathLike, atomic: bool = True) -> None:
        """Write ``id,mosaic,row,col`` sorted by mosaic, row and column, atomically (``atomic=False``: straight to
        ``path``, for a caller that commits a set of files itself, tgs.io.atomic_paths)."""
        order = np.lexsort((self.col, self.row, self.mosaic))
        with (atomic_open(path, "w", newline="") if atomic else open(path, "w", newline="")) as fh:
            pd.DataFrame({"id": self.ids[order], "mosaic": self.mosaic[order], "row": self.row[order],
                          "col": self.col[order]}).to_csv(fh, index=False)

    # -- structure ----------------------------------------------------------------------------------------------
    def collisions(self) -> np.ndarray:
        """(K, 2) indices of tiles that share a position (empty when the layout is valid)."""
        return collisions(self.mosaic, self.row, self.col)

    def sizes(self) -> np.ndarray:
        """Tiles per mosaic, indexed by mosaic number (files are bounded so that this stays small)."""
        return np.bincount(self.mosaic, minlength=int(self.mosaic.max(initial=-1)) + 1)

    def index_of(self, ids) -> np.ndarray:
        """Index in self of each id, -1 for ids that are in no mosaic."""
        return pd.Index(self.ids).get_indexer(np.asarray(ids, str))

    def _in_query(self, ids: np.ndarray) -> np.ndarray:
        """For each tile of self, its index in ``ids`` (-1 if absent); ``ids`` must be unique."""
        index = pd.Index(ids)
        if index.has_duplicates:
            raise ValueError("Mosaics queries need unique ids")
        return index.get_indexer(self.ids)

    # -- queries ------------------------------------------------------------------------------------------------
    def neighbours(self, ids) -> Neighbours:
        """For a list of ids (e.g. the test set in order, or train + test), the index *into that list* of each
        tile's neighbour above / below / left / right; -1 where there is none or where it is not in the list."""
        ids = np.asarray(ids, str)
        where = self.index_of(ids)
        inside = where >= 0
        to_query = self._in_query(ids)
        out = {}
        at = cell_lookup(self.mosaic, self.row, self.col)
        for name, (dr, dc) in (("up", (-1, 0)), ("down", (1, 0)), ("left", (0, -1)), ("right", (0, 1))):
            result = np.full(len(ids), -1, np.int64)
            w = where[inside]
            k = at(self.mosaic[w], self.row[w] + dr, self.col[w] + dc)
            result[inside] = np.where(k >= 0, to_query[np.maximum(k, 0)], -1)
            out[name] = result
        return Neighbours(**out)

    def grids(self, ids=None) -> list[np.ndarray]:
        """One 2-D int array per mosaic (rows x cols of its bounding box): the index of the tile in each cell,
        into ``ids`` when given (tiles not in ``ids`` count as empty) or into self; -1 for empty cells."""
        value = np.arange(len(self)) if ids is None else self._in_query(np.asarray(ids, str))
        n = int(self.mosaic.max(initial=-1)) + 1
        r0 = np.full(n, np.iinfo(np.int64).max)
        c0 = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(r0, self.mosaic, self.row)
        np.minimum.at(c0, self.mosaic, self.col)
        height = np.zeros(n, np.int64)
        width = np.zeros(n, np.int64)
        np.maximum.at(height, self.mosaic, self.row - r0[self.mosaic] + 1)
        np.maximum.at(width, self.mosaic, self.col - c0[self.mosaic] + 1)
        start = np.concatenate([[0], np.cumsum(height * width)])
        flat = np.full(int(start[-1]), -1, np.int64)
        m = self.mosaic
        flat[start[m] + (self.row - r0[m]) * width[m] + self.col - c0[m]] = value
        return [flat[start[m]:start[m + 1]].reshape(height[m], width[m]) for m in range(n)]  # loop per mosaic

    def adjacent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair of tiles next to each other: indices (a, b) into self and the relation (``LR``: a left of b,
        ``TB``: a above b), in the order LR pairs then TB pairs."""
        a_all, b_all, rel_all = [], [], []
        at = cell_lookup(self.mosaic, self.row, self.col)
        for rel in RELATIONS:
            dr, dc = STEP[rel]
            b = at(self.mosaic, self.row + dr, self.col + dc)
            a = np.flatnonzero(b >= 0)
            a_all.append(a)
            b_all.append(b[a])
            rel_all.append(np.full(len(a), rel))
        return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(rel_all)

    def adjacent_ids(self) -> pd.DataFrame:
        """:meth:`adjacent` as ids: a DataFrame ``a, b, rel``."""
        a, b, rel = self.adjacent()
        return pd.DataFrame({"a": self.ids[a], "b": self.ids[b], "rel": rel})


@dataclass
class Pairs:
    """Matched edges: ``a`` and ``b`` (ids), ``rel`` (``LR``: a left of b, ``TB``: a above b), ``score``."""

    a: np.ndarray
    b: np.ndarray
    rel: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        self.a, self.b, self.rel = (np.asarray(x, dtype=str) for x in (self.a, self.b, self.rel))
        self.score = np.asarray(self.score, dtype=np.float64)
        if not (len(self.a) == len(self.b) == len(self.rel) == len(self.score)):
            raise ValueError("Pairs: a, b, rel and score must have one entry per pair")

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def read(cls, path: str | os.PathLike, known_ids=None) -> "Pairs":
        """Read and validate a ``pairs.csv`` (one DataError line naming the file for each kind of problem)."""
        df = read_csv_strings(path, PAIR_COLUMNS)
        rel = df["rel"].to_numpy(str)
        bad = ~np.isin(rel, RELATIONS)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{path}: line {row + 2}: rel {excerpt(rel[row])} is not LR or TB")
        score = pd.to_numeric(df["score"], errors="coerce").to_numpy(np.float64)
        if np.isnan(score).any():
            row = int(np.argmax(np.isnan(score)))
            raise DataError(f"{path}: line {row + 2}: score {excerpt(df['score'].iloc[row])} is not a number")
        a, b = df["a"].to_numpy(str), df["b"].to_numpy(str)
        if (a == b).any():
            raise DataError(f"{path}: line {int(np.argmax(a == b)) + 2}: a tile cannot be its own neighbour")
        _check_known(np.concatenate([a, b]), known_ids, path)
        return cls(a, b, rel, score)

    def write(self, path: str | os.PathLike, atomic: bool = True) -> None:
        """Write ``a,b,rel,score``, atomically unless ``atomic=False`` (as :meth:`Mosaics.write`)."""
        with (atomic_open(path, "w", newline="") if atomic else open(path, "w", newline="")) as fh:
            pd.DataFrame({"a": self.a, "b": self.b, "rel": self.rel,
                          "score": np.round(self.score, 6)}).to_csv(fh, index=False)
