"""Rebuild the mosaics: which tiles were cut next to each other from one large section (the jigsaw).

Train and test tiles are matched together:

1. seam filters (:func:`learn_filters`): linear filters over a few lines on either side of a seam whose response is
   small where one tile continues into the other. They are learnt from the set itself: its tiles cut in half are
   true neighbours, the same halves paired at random are not, and the filters that separate the two best are
   generalised eigenvectors (a Fisher criterion). Each side of each tile is described by its filter responses
   along the edge, scaled to unit length: the distance between a's and b's descriptors scores the seam. Flat or
   near-constant edges get no descriptor and never match;
2. candidates: the NEIGHBOURS nearest opposite sides of every side, both ways, by brute force in float32 matrix
   products over chunks of tiles (memory stays bounded for 22000 tiles);
3. confident pairs: b is a's best match and a is b's (mutual), and the best distance is clearly below the second
   best in both directions. The ratio threshold is calibrated on the set itself (:func:`null_threshold`): null
   queries, lines inside the tiles, have no partner among the edges, and the threshold lets through only NULL_RATE
   of them;
4. loops (:func:`loops`): 2x2 squares whose four seams are all best candidates close rarely by chance, so their
   seams are accepted even where the ratio test alone is unsure;
5. layout: accepted pairs form a graph; its minimum spanning forest (by distance) places the tiles on integer
   (row, col) positions. A pair that does not close its cycle is dropped (it is the weakest of that cycle); when
   tiles claim one cell, the pair on most of the paths between the clashing tiles is dropped (the weakest of them;
   with a single clash simply the weakest pair on its path), and the layout is redone: a conflict never drops a
   whole mosaic. Tiles that the layout puts side by side without a pair between them must fit there too (each
   among the other's k nearest candidates, :func:`fit_rank`); one that does not is a clash as well, unless the
   seams on both sides of it, parallel to it, hold (one hard seam inside a join that holds around it);
6. growing (:func:`grow`, :func:`join_pairs`, and loops through the pairs placed): an empty cell next to two or
   more placed tiles is filled when every seam around it names the same tile as its best candidate; two mosaics
   are joined by a best candidate pair when the join shares no cell and the other seams it creates fit; squares
   that close through placed pairs add whole rows and columns. The layout is redone and growing repeats until
   nothing changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

from datasets import kaggle
from tgs.io import atomic_paths
from tgs.mosaic import MOSAICS_FILE, PAIRS_FILE, RELATIONS, STEP, Mosaics, Pairs, cell_lookup, collisions
from tgs.progress import bar

FLAT_STD = 2.0  # an edge line with a smaller standard deviation (grey levels) is near-constant: never matched
# an edge line with fewer pixels than this outside its longest constant run (still water over the sea floor, a
# section's blank margin) has too little texture to match: it is never matched either
MIN_TEXTURED = 20
NEIGHBOURS = 8  # candidates kept per edge (growing, the layout's fit check)
NULL_RATE = 0.001  # the ratio threshold lets through this share of the null queries (edges without a partner)
RATIO_RANGE = (0.5, 0.8)  # the calibrated threshold is clipped to this range (small sets give few null queries)
NULL_TAIL = 5  # calibrate only when at least this many null queries are expected below the threshold
NULL_QUERIES = 1000  # null queries per cut and seam direction: at most this many tiles, evenly spaced
# the null queries' cut positions, lines in from the edge; not half way: some Kaggle tiles overlap by half a tile,
# and a cut there would find them
NULL_CUTS = (20, 30, 40, 60, 70, 80)
# tiles side by side without a pair must be among each other's k nearest candidates, k one per FIT_TILES tiles of
# the set within FIT_RANK: a random tile is among another's k nearest with chance k/n, at most 1 in FIT_TILES
# above the floor (on a set of a few hundred tiles, 8 lets wrong neighbours fit)
FIT_RANK = (4, 8)
FIT_TILES = 500
GROW_ROUNDS = 30  # growing stops earlier when a round places nothing


@dataclass(frozen=True)
class Seam:
    """One seam direction: tile a's side ``first`` touches tile b's side ``second`` (LR: a's right, b's left);
    ``axis`` is the image axis that crosses the seam (2: columns for LR, 1: rows for TB)."""

    rel: str
    first: str  # a's side: "right" or "bottom"
    second: str  # b's side: "left" or "top"
    axis: int


SEAMS = {"LR": Seam("LR", "right", "left", 2), "TB": Seam("TB", "bottom", "top", 1)}
LINES = 4  # lines of each side that the seam filters read, from the edge inward
TAPS = 5  # pixels along the edge that one filter response reads
FILTERS = 3  # seam filters kept per direction (the most selective ones)
LEARN_TILES = 3000  # at most this many tiles (evenly spaced) are cut in half to learn the filters
CUT = 50  # the tiles are cut in half after this many lines
STRIDE = 2  # responses kept every STRIDE pixels along the edge (neighbouring responses share most of their taps)


def edge_lines(images: np.ndarray, side: str, offsets=(0, 1)) -> np.ndarray:
    """Lines of each image parallel to a side, at ``offsets`` from the edge inward: (N, len(offsets), width)
    float32."""
    o = np.asarray(offsets)
    if side == "right":
        lines = images[:, :, images.shape[2] - 1 - o].transpose(0, 2, 1)
    elif side == "left":
        lines = images[:, :, o].transpose(0, 2, 1)
    elif side == "bottom":
        lines = images[:, images.shape[1] - 1 - o, :]
    elif side == "top":
        lines = images[:, o, :]
    else:
        raise ValueError(f"unknown side {side!r}")
    return np.ascontiguousarray(lines, dtype=np.float32)


def flat_edges(images: np.ndarray, side: str) -> np.ndarray:
    """(N,) bool: the edge line at ``side`` is flat or near-constant (standard deviation below FLAT_STD), or all
    but fewer than MIN_TEXTURED of its pixels are one constant run."""
    line = edge_lines(images, side, (0,))[:, 0]
    return (line.std(axis=1) < FLAT_STD) | (line.shape[1] - longest_run(line) < MIN_TEXTURED)


def longest_run(lines: np.ndarray) -> np.ndarray:
    """(N,) int: the length of the longest run of equal consecutive values in each row of ``lines`` (N, L)."""
    n, length = lines.shape
    if length == 0:
        return np.zeros(n, np.int64)
    starts = np.ones((n, length), bool)
    starts[:, 1:] = lines[:, 1:] != lines[:, :-1]
    run = np.cumsum(starts, axis=1) - 1 + (np.arange(n) * length)[:, None]  # a run's number, unique over rows
    return np.bincount(run.ravel(), minlength=n * length).reshape(n, length).max(axis=1)


def normalised_lines(images: np.ndarray, side: str) -> np.ndarray:
    """(N, LINES, width) float32: a side's LINES lines, minus the edge line's mean and over its standard deviation.

    Each Kaggle tile is stretched to the full grey range on its own, so neighbours differ in brightness and
    contrast by a factor of their own; the edge line's statistics undo it for both tiles of a seam alike."""
    lines = edge_lines(images, side, tuple(range(LINES)))
    edge = lines[:, 0]
    return (lines - edge.mean(axis=1)[:, None, None]) / np.maximum(edge.std(axis=1), 1.0)[:, None, None]


@dataclass(frozen=True)
class SeamFilters:
    """Linear filters across one seam direction: each reads LINES lines on either side and TAPS pixels along the
    edge; its response is small where a continues into b and large where it does not. ``first`` and ``second``
    (FILTERS, LINES, TAPS) are the a-side and b-side coefficients, ``weight`` each filter's weight in the score."""

    first: np.ndarray
    second: np.ndarray
    weight: np.ndarray


def _patches(lines: np.ndarray) -> np.ndarray:
    """(N * positions, LINES * TAPS) float64: the TAPS-wide windows along the edge of every tile's lines, every
    STRIDE pixels."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(lines, TAPS, axis=2)[:, :, ::STRIDE]  # (N, LINES, positions, TAPS), a view
    return windows.transpose(0, 2, 1, 3).reshape(-1, LINES * TAPS).astype(np.float64)


def halves(images: np.ndarray, seam: Seam, cut: int = CUT) -> tuple[np.ndarray, np.ndarray]:
    """Each image cut across ``seam`` after ``cut`` lines: (a halves, b halves), views of true neighbour pairs.
    Each half's brightness and contrast need no stretching of their own: :func:`normalised_lines` undoes them."""
    lines = (slice(None),) * seam.axis
    return images[lines + (slice(0, cut),)], images[lines + (slice(cut, None),)]


def learn_filters(images: np.ndarray, seam: Seam) -> SeamFilters | None:
    """The seam filters of this set, learnt from the set itself: its tiles cut in half across the seam are true
    neighbours (:func:`halves`); the same halves paired at random are not. The filters are the generalised
    eigenvectors that make the responses of true pairs smallest relative to random ones (a Fisher criterion,
    scipy.linalg.eigh); each is weighted by one over the square root of its ratio. Learning on the set itself
    calibrates the score to its texture, resolution and noise: no tuning on other data. None when fewer than two
    tiles have a textured line at the cut: such a set has nothing to match either."""
    from scipy import linalg

    pick = np.unique(np.linspace(0, len(images) - 1, min(LEARN_TILES, len(images))).astype(np.int64))
    a, b = halves(images[pick], seam)
    ok = np.flatnonzero(~flat_edges(a, seam.first) & ~flat_edges(b, seam.second))
    size = 2 * LINES * TAPS
    if len(ok) < 2:
        return None
    pa, pb = normalised_lines(a[ok], seam.first), normalised_lines(b[ok], seam.second)
    shuffle = np.roll(np.arange(len(ok)), len(ok) // 2)  # a fixed derangement: every a half with another's b half
    true = np.hstack([_patches(pa), _patches(pb)])
    false = np.hstack([_patches(pa), _patches(pb[shuffle])])
    cov = lambda x: x.T @ x / len(x) + 1e-6 * np.eye(size)  # noqa: E731
    ratio, vectors = linalg.eigh(cov(true), cov(false))
    keep = vectors[:, :FILTERS].T.reshape(FILTERS, 2, LINES, TAPS)
    return SeamFilters(keep[:, 0], keep[:, 1], 1 / np.sqrt(np.maximum(ratio[:FILTERS], 1e-6)))


def filter_responses(images: np.ndarray, side: str, coefficients: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(N, FILTERS * positions / STRIDE) float32: each filter's weighted response along the edge of ``side``."""
    lines = normalised_lines(images, side)
    positions = lines.shape[2] - TAPS + 1
    out = np.zeros((len(images), len(coefficients), positions), np.float32)
    for f, c in enumerate(coefficients):  # a loop over FILTERS x LINES x TAPS coefficients
        for line in range(LINES):
            for tap in range(TAPS):
                out[:, f] += np.float32(c[line, tap] * weight[f]) * lines[:, line, tap:tap + positions]
    kept = out[:, :, ::STRIDE]
    return kept.reshape(len(images), kept.shape[1] * kept.shape[2])


def descriptors(images: np.ndarray, seam: Seam, filters: SeamFilters) -> tuple[np.ndarray, np.ndarray]:
    """Unit descriptors of every tile's ``seam.first`` and ``seam.second`` sides: a's filter responses and b's
    responses negated, so that a true pair's descriptors nearly coincide (their sum, the seam's response, is
    small). Scaled to unit length: a tile's own contrast along the edge does not count."""
    return (_unit(filter_responses(images, seam.first, filters.first, filters.weight)),
            _unit(-filter_responses(images, seam.second, filters.second, filters.weight)))


def _unit(parts: np.ndarray) -> np.ndarray:
    parts = parts - parts.mean(axis=1, keepdims=True)
    return (parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-9)).astype(np.float32)


CHUNK = 1024  # query rows per matrix product: CHUNK x N float32 similarities at a time (90 MB for 22000 tiles)


def _top(sim: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns and values of the ``m`` largest entries of each row, best first (``sim`` is overwritten). A few
    passes of argmax: ten times faster than argpartition for the handful of candidates kept."""
    rows = np.arange(len(sim))
    top = np.empty((len(sim), m), np.int64)
    val = np.empty((len(sim), m), np.float32)
    for j in range(m):  # a loop over the m <= NEIGHBOURS ranks
        top[:, j] = np.argmax(sim, axis=1)
        val[:, j] = sim[rows, top[:, j]]
        sim[rows, top[:, j]] = -np.inf
    return top, val


def _merge(tiles: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each row of several candidate lists side by side (tiles -1 where none)."""
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(tiles, order, axis=1), np.take_along_axis(sim, order, axis=1)


def nearest_both(first: np.ndarray, ok_a: np.ndarray, second: np.ndarray, ok_b: np.ndarray, k: int,
                 backward: bool = True):
    """For each row of ``first`` (a sides of tiles ``ok_a``) its ``k`` nearest rows of ``second`` (b sides of
    tiles ``ok_b``, sorted), and (``backward``) for each b its ``k`` nearest a, never the tile itself: (fwd tiles,
    fwd distances, bwd tiles, bwd distances), tile -1 and distance inf where there are fewer candidates.

    One brute-force pass of float32 matrix products over chunks of a sides gives both directions (the bwd lists
    are merged chunk by chunk): memory stays at one CHUNK x N block. The descriptors are unit vectors, so the
    distance is sqrt(2 - 2 cosine). scikit-learn's brute search would do each direction separately and compute
    float32 distances in float64 chunks: several times slower for the same result."""
    second_t = np.ascontiguousarray(second.T)
    fwd = np.full((len(ok_a), k), -1, np.int64)
    fwd_s = np.full((len(ok_a), k), -np.inf, np.float32)
    bwd = np.full((len(ok_b), k), -1, np.int64)
    bwd_s = np.full((len(ok_b), k), -np.inf, np.float32)
    m = min(k, len(ok_b))
    for lo in range(0, len(ok_a), CHUNK):  # a loop over chunks of CHUNK a sides
        tiles = ok_a[lo:lo + CHUNK]
        own = np.searchsorted(ok_b, tiles)
        mine = own < len(ok_b)
        mine[mine] = ok_b[own[mine]] == tiles[mine]
        if m:
            sim = first[lo:lo + CHUNK] @ second_t
            sim[np.flatnonzero(mine), own[mine]] = -np.inf  # a tile is never its own neighbour
            top, val = _top(sim, m)
            fwd[lo:lo + CHUNK, :m] = np.where(np.isfinite(val), ok_b[top], -1)
            fwd_s[lo:lo + CHUNK, :m] = val
        if m and backward:  # the same block transposed, computed as a product (a transposed copy is slower)
            sim = second @ first[lo:lo + CHUNK].T
            sim[own[mine], np.flatnonzero(mine)] = -np.inf
            top, val = _top(sim, min(k, len(tiles)))
            bwd, bwd_s = _merge(np.hstack([bwd, np.where(np.isfinite(val), tiles[top], -1)]),
                                np.hstack([bwd_s, val]), k)
    distance = lambda s: np.sqrt(np.maximum(2 - 2 * s.astype(np.float64), 0))  # noqa: E731  (inf for -inf)
    return fwd, distance(fwd_s), bwd, distance(bwd_s)


@dataclass
class EdgeTable:
    """For one seam direction, every tile's nearest candidates: ``fwd`` (N, K) the b tiles nearest a's first side,
    ``bwd`` (N, K) the a tiles nearest b's second side (-1 for none or a flat edge), with their distances, and the
    ratio threshold calibrated for this direction (:func:`null_threshold`); ``filters``, the seam filters behind the
    distances (None where nothing could be learnt)."""

    rel: str
    fwd: np.ndarray
    fwd_d: np.ndarray
    bwd: np.ndarray
    bwd_d: np.ndarray
    threshold: float
    filters: SeamFilters | None = None


def null_threshold(images: np.ndarray, seam: Seam, filters: SeamFilters, second: np.ndarray,
                   ok_b: np.ndarray) -> float:
    """The best/second-best ratio below which a match is accepted, calibrated on this set.

    Null queries are real edges that have no partner among the candidates: lines inside the tiles (the tiles cut
    across the seam NULL_CUTS lines in, a-side halves), whose true continuation is the rest of their own tile.
    Their best/second-best ratios against the set's b sides show how low a ratio chance alone reaches on this
    data's texture; the threshold lets through NULL_RATE of them, clipped to RATIO_RANGE. Sets too small to show
    that tail (fewer than NULL_TAIL / NULL_RATE queries) get the strict end of the range."""
    if len(ok_b) < 2:
        return RATIO_RANGE[0]
    pick = np.unique(np.linspace(0, len(images) - 1, min(NULL_QUERIES, len(images))).astype(np.int64))
    ratios_ = []
    for _, _, d in null_matches(images, seam, filters, second, ok_b, pick):  # a loop over the cut positions
        if len(d) * len(NULL_CUTS) * NULL_RATE < NULL_TAIL:
            return RATIO_RANGE[0]  # too few null queries to see the tail: strict
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios_.append(d[:, 0] / d[:, 1])
    ratio = np.concatenate(ratios_)
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return RATIO_RANGE[0]
    return float(np.clip(np.quantile(ratio, NULL_RATE), *RATIO_RANGE))


def null_matches(images: np.ndarray, seam: Seam, filters: SeamFilters, second: np.ndarray, ok_b: np.ndarray,
                 tiles: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The null queries of ``tiles`` (indices into ``images``), one cut position of NULL_CUTS after another: the
    tiles' lines that many lines in (a-side halves), real texture with no partner among the edges, matched
    against the b sides ``second`` of tiles ``ok_b``, never the query's own tile's: a real edge is never matched
    with its own tile, and a line inside a tile can resemble that tile's far edge. Per cut: (the textured
    queries' tiles, their two nearest b tiles, the distances), as :func:`nearest_both` gives them."""
    out = []
    for cut in NULL_CUTS:  # a loop over the cut positions
        inner = halves(images[tiles], seam, cut)[0]
        ok = np.flatnonzero(~flat_edges(inner, seam.first))
        query = _unit(filter_responses(inner[ok], seam.first, filters.first, filters.weight))
        best, d, _, _ = nearest_both(query, tiles[ok], second[ok_b], ok_b, 2, backward=False)
        out.append((tiles[ok], best, d))
    return out


def edge_tables(images: np.ndarray, k: int = NEIGHBOURS) -> dict[str, EdgeTable]:
    """The candidate tables of both seam directions (two nearest-neighbour searches each, plus the null queries)."""
    n = len(images)
    out = {}
    progress = bar(desc="mosaics: nearest edges", total=len(RELATIONS), unit="direction")
    for rel in RELATIONS:
        seam = SEAMS[rel]
        filters = learn_filters(images, seam)
        fwd, fwd_d = np.full((n, k), -1, np.int64), np.full((n, k), np.inf)
        bwd, bwd_d = fwd.copy(), fwd_d.copy()
        threshold = RATIO_RANGE[0]
        if filters is not None:  # else nothing matches: every edge is flat, or a single tile is textured
            first, second = descriptors(images, seam, filters)
            ok_a = np.flatnonzero(~flat_edges(images, seam.first))
            ok_b = np.flatnonzero(~flat_edges(images, seam.second))
            fwd[ok_a], fwd_d[ok_a], bwd[ok_b], bwd_d[ok_b] = nearest_both(first[ok_a], ok_a, second[ok_b], ok_b, k)
            threshold = null_threshold(images, seam, filters, second, ok_b)
        progress.update()
        out[rel] = EdgeTable(rel, fwd, fwd_d, bwd, bwd_d, threshold, filters)
    progress.close()
    return out


@dataclass
class Candidates:
    """Accepted pairs of tile indices: a is left of (LR) or above (TB) b, with their descriptor distance."""

    a: np.ndarray
    b: np.ndarray
    rel: np.ndarray
    distance: np.ndarray

    @classmethod
    def concat(cls, parts: list["Candidates"]) -> "Candidates":
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, "<U2"), np.zeros(0))
        return cls(*(np.concatenate([getattr(c, f) for c in parts]) for f in ("a", "b", "rel", "distance")))


def ratios(table: EdgeTable) -> tuple[np.ndarray, np.ndarray]:
    """For every tile as a: its best b (-1 for none), whether a is b's best too (mutual), and the larger of the two
    best/second-best ratios (inf when either side has a single candidate)."""
    n = len(table.fwd)
    b = table.fwd[:, 0]
    has = b >= 0
    bb = np.maximum(b, 0)
    mutual = has & (table.bwd[bb, 0] == np.arange(n))
    with np.errstate(divide="ignore", invalid="ignore"):
        fwd_ratio = table.fwd_d[:, 0] / table.fwd_d[:, 1]
        bwd_ratio = table.bwd_d[bb, 0] / table.bwd_d[bb, 1]
    worst = np.maximum(fwd_ratio, bwd_ratio)
    return mutual, np.where(np.isnan(worst), np.inf, worst)


def confident_pairs(tables: dict[str, EdgeTable], ratio: float | None = None) -> Candidates:
    """The unambiguous pairs: mutual best matches whose best/second-best ratio, both ways, is below ``ratio`` (by
    default each direction's calibrated threshold)."""
    found = []
    for rel, t in tables.items():
        mutual, worst = ratios(t)
        keep = mutual & (worst < (t.threshold if ratio is None else ratio))
        a = np.flatnonzero(keep)
        found.append(Candidates(a, t.fwd[a, 0], np.full(len(a), rel), t.fwd_d[a, 0]))
    return Candidates.concat(found)


LOOP_RATIO = 0.98  # a seam in a loop: its best candidate at least 2% nearer than the second (ties never count)
LOOP_MUTUAL = 3  # of a loop's four seams, at least this many are mutual best matches
LOOP_CONFIDENT = 2  # and at least this many pass the ratio test alone or are known (small sets close chance loops)


def best_edges(table: EdgeTable, known: Candidates | None = None) -> pd.DataFrame:
    """Every pair where one tile is the other's best candidate (in either direction, at least 1 / LOOP_RATIO
    nearer than the second best), and the pairs ``known`` of this direction already: columns a, b, mutual (both
    ways the best) and confident (mutual and below the ratio threshold, :func:`confident_pairs`); a known pair
    is both."""
    with np.errstate(divide="ignore", invalid="ignore"):
        fwd_ok = table.fwd_d[:, 0] < LOOP_RATIO * table.fwd_d[:, 1]
        bwd_ok = table.bwd_d[:, 0] < LOOP_RATIO * table.bwd_d[:, 1]
    a = np.r_[np.flatnonzero(fwd_ok), table.bwd[bwd_ok, 0]]
    b = np.r_[table.fwd[fwd_ok, 0], np.flatnonzero(bwd_ok)]
    df = pd.DataFrame({"a": a, "b": b})[(a >= 0) & (b >= 0)].drop_duplicates()
    fwd_best = table.fwd[df["a"].to_numpy(), 0] == df["b"].to_numpy()
    bwd_best = table.bwd[df["b"].to_numpy(), 0] == df["a"].to_numpy()
    df["mutual"] = fwd_best & bwd_best
    mutual, worst = ratios(table)
    df["confident"] = df["mutual"] & (worst[df["a"].to_numpy()] < table.threshold)
    if known is not None and len(known.a):
        sel = known.rel == table.rel
        df = pd.concat([pd.DataFrame({"a": known.a[sel], "b": known.b[sel], "mutual": True, "confident": True}), df])
        df = df.drop_duplicates(["a", "b"])  # a known pair counts as mutual
    return df.reset_index(drop=True)


def loops(tables: dict[str, EdgeTable], known: Candidates | None = None, impossible: bool = False) -> pd.DataFrame:
    """2x2 squares of tiles whose four seams are best candidates or ``known`` pairs (:func:`best_edges`), at least
    LOOP_MUTUAL of them mutual and LOOP_CONFIDENT confident: a left of b, c left of d, a above c, b above d
    (columns a, b, c, d). Four seams that close a square by chance are rare, so a seam too ambiguous for the
    ratio test alone is accepted when its square closes (the loop constraint of jigsaw puzzle solvers), and known
    pairs let mosaics grow by whole rows and columns. With ``impossible`` the same search for a geometry that
    cannot exist (d right of c and above b): the squares that close by chance on this set, the false-loop
    estimate the benchmark prints."""
    cols = ["a", "b", "mutual", "confident"]
    lr, tb = best_edges(tables["LR"], known)[cols], best_edges(tables["TB"], known)[cols]
    seam = lambda df, i, **names: df.rename(columns={"mutual": f"m{i}", "confident": f"c{i}", **names})  # noqa: E731
    x = seam(lr, 1).merge(seam(tb, 2, b="c"), on="a")
    if impossible:
        x = x.merge(seam(lr, 3, a="c", b="d"), on="c").merge(seam(tb, 4, a="d"), on=["d", "b"])
    else:
        x = x.merge(seam(tb, 3, a="b", b="d"), on="b").merge(seam(lr, 4, a="c", b="d"), on=["c", "d"])
    mutual = x[["m1", "m2", "m3", "m4"]].sum(axis=1).to_numpy()
    confident = x[["c1", "c2", "c3", "c4"]].sum(axis=1).to_numpy()
    keep = (x["a"] != x["d"]).to_numpy() & (x["b"] != x["c"]).to_numpy()
    keep &= (mutual >= LOOP_MUTUAL) & (confident >= LOOP_CONFIDENT)
    return x.loc[keep, ["a", "b", "c", "d"]].reset_index(drop=True)


def loop_pairs(tables: dict[str, EdgeTable], known: Candidates | None = None) -> Candidates:
    """The four pairs of every closed square (:func:`loops`), each once, with its descriptor distance (the
    nearer of the two directions' when both list it)."""
    sq = loops(tables, known)
    parts = []
    for rel, first, second in (("LR", "a", "b"), ("LR", "c", "d"), ("TB", "a", "c"), ("TB", "b", "d")):
        a, b = sq[first].to_numpy(np.int64), sq[second].to_numpy(np.int64)
        parts.append(Candidates(a, b, np.full(len(a), rel), pair_distance(tables[rel], a, b)))
    return _without(len(tables["LR"].fwd), Candidates.concat(parts), np.zeros(0, np.int64))


def pair_distance(table: EdgeTable, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The descriptor distance of each pair (a, b) of ``table``'s direction: the nearer of the two directions'
    candidate lists where both list it, inf where neither does."""
    return np.minimum(_distance(table.fwd, table.fwd_d, a, b), _distance(table.bwd, table.bwd_d, b, a))


def _distance(cand: np.ndarray, dist: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distance of b in a's candidate list (inf where b is not listed)."""
    hit = cand[a] == b[:, None]
    return np.where(hit.any(axis=1), np.where(hit, dist[a], np.inf).min(axis=1), np.inf)


def likely_pairs(images: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Tiles that are likely neighbours among ``images``: :func:`confident_pairs` at ``ratio``, in either seam
    direction: (a, b) index arrays. Looser than the mosaics' pairs: for grouping tiles (mosaic folds), where a
    wrong link costs a little balance and a missed one leaks a neighbour."""
    pairs = confident_pairs(edge_tables(images), ratio)
    return pairs.a, pairs.b


def match(images: np.ndarray, ratio: float | None = None) -> Candidates:
    """The unambiguous neighbour pairs among ``images`` (N, 101, 101) (:func:`confident_pairs`)."""
    return confident_pairs(edge_tables(images), ratio)


# -- layout ---------------------------------------------------------------------------------------------------------
@dataclass
class Placement:
    """Where the layout put each tile: ``component`` (N,) (-1 for tiles in no pair), ``row``, ``col``, and which
    candidate pairs it kept (``kept``, aligned with the candidates)."""

    component: np.ndarray
    row: np.ndarray
    col: np.ndarray
    kept: np.ndarray


def _steps(rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dr = np.where(rel == "TB", STEP["TB"][0], STEP["LR"][0])
    dc = np.where(rel == "TB", STEP["TB"][1], STEP["LR"][1])
    return dr.astype(np.int64), dc.astype(np.int64)


def _spanning_layout(n: int, a, b, dr, dc, cost):
    """Positions from the minimum spanning forest of the pairs: (component, row, col, parent, depth, parent_pair)
    per tile; roots are their own parent. Pointer jumping sums the steps up to each root (no loop per tile)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    graph = sparse.coo_matrix((cost + 1e-9, (lo, hi)), shape=(n, n)).tocsr()  # explicit zeros would vanish
    tree = csgraph.minimum_spanning_tree(graph).tocoo()
    _, component = csgraph.connected_components(tree, directed=False)
    roots = np.unique(component, return_index=True)[1]
    virtual = n  # one extra node joined to every root: one breadth-first pass orients the whole forest
    rows = np.concatenate([tree.row, np.full(len(roots), virtual)])
    cols = np.concatenate([tree.col, roots])
    both = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    _, pred = csgraph.breadth_first_order(both, virtual, directed=False, return_predecessors=True)
    parent = pred[:n].astype(np.int64)
    parent[roots] = roots
    child = np.flatnonzero(parent != np.arange(n))
    pair_key = lo * n + hi
    order = np.argsort(pair_key)
    key = np.minimum(child, parent[child]) * n + np.maximum(child, parent[child])
    parent_pair = np.full(n, -1, np.int64)
    parent_pair[child] = order[np.searchsorted(pair_key[order], key)]
    p = parent_pair[child]
    sign = np.where(b[p] == child, 1, -1)  # child is b: it lies one step after its parent
    off_r = np.zeros(n, np.int64)
    off_c = np.zeros(n, np.int64)
    off_r[child] = sign * dr[p]
    off_c[child] = sign * dc[p]
    depth = (parent != np.arange(n)).astype(np.int64)
    up = parent.copy()
    while (up[up] != up).any():
        off_r, off_c, depth, up = off_r + off_r[up], off_c + off_c[up], depth + depth[up], up[up]
    return component, off_r, off_c, parent, depth, parent_pair


def _path_pairs(u: int, v: int, parent, depth, parent_pair) -> list[int]:
    """The tree pairs on the path between tiles u and v (a loop along one path)."""
    out = []
    while u != v:
        if depth[u] < depth[v]:
            u, v = v, u
        out.append(int(parent_pair[u]))
        u = parent[u]
    return out


def _culprit(clash: np.ndarray, tiles: np.ndarray, parent, depth, parent_pair, cost) -> int:
    """The pair to drop for a set of clashes: the one on most of the clashing tiles' paths (one wrong pair that
    glues two mosaics on top of each other is on all of them), the weakest among those."""
    on_path = np.concatenate([_path_pairs(int(tiles[i]), int(tiles[j]), parent, depth, parent_pair)
                              for i, j in clash])  # a loop per conflict
    counts = np.bincount(on_path, minlength=len(cost))
    return int(np.lexsort((-cost, -counts))[0])


def layout(n: int, a: np.ndarray, b: np.ndarray, rel: np.ndarray, cost: np.ndarray,
           seam_fits: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None) -> Placement:
    """Lay out ``n`` tiles from pairs (a left of / above b, lower cost = better); see the module docstring.

    With ``seam_fits(a, b, rel) -> bool array``, tiles that the layout puts next to each other without a pair
    between them must fit there too: one that does not is a clash (two mosaics glued by a wrong pair put unrelated
    tiles side by side), resolved like two tiles on one cell."""
    a, b, cost = np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(cost, np.float64)
    dr, dc = _steps(np.asarray(rel, str))
    kept = np.zeros(len(a), bool)
    if len(a):  # one pair per two tiles (two relations between the same tiles cannot both hold): the best one
        key = np.minimum(a, b) * n + np.maximum(a, b)
        order = np.lexsort((cost, key))
        kept[order[np.r_[True, key[order][1:] != key[order][:-1]]]] = True
    while True:  # each round drops the pairs that break cycles and at most one pair behind each mosaic's clashes
        live = np.flatnonzero(kept)
        component, row, col, parent, depth, parent_pair = _spanning_layout(
            n, a[live], b[live], dr[live], dc[live], cost[live])
        la, lb = a[live], b[live]
        broken = (row[lb] - row[la] != dr[live]) | (col[lb] - col[la] != dc[live])
        kept[live[broken]] = False  # cycles that do not close: never tree pairs, the weakest of their cycle
        in_pair = np.zeros(n, bool)
        in_pair[la[~broken]] = in_pair[lb[~broken]] = True
        tiles = np.flatnonzero(in_pair)
        clash = collisions(component[tiles], row[tiles], col[tiles])
        if clash.size == 0 and seam_fits is not None:
            clash = _misfits(n, tiles, component, row, col, la[~broken], lb[~broken], seam_fits)
        if clash.size == 0:
            component = np.where(in_pair, component, -1)
            return Placement(component, np.where(in_pair, row, 0), np.where(in_pair, col, 0), kept)
        clash_component = component[tiles[clash[:, 0]]]
        for c in np.unique(clash_component):  # a loop per mosaic with clashes: they are independent of each other
            mine = clash[clash_component == c]
            kept[live[_culprit(mine, tiles, parent, depth, parent_pair, cost[live])]] = False


def _misfits(n: int, tiles: np.ndarray, component, row, col, pair_a, pair_b, seam_fits) -> np.ndarray:
    """(K, 2) indices into ``tiles`` of tiles side by side in the layout, with no pair between them, whose seam
    does not fit (``seam_fits``), unless both seams beside it and parallel to it (above and below an LR seam, left
    and right of a TB seam) are pairs or fit: one hard seam inside a join that holds on either side is forgiven,
    while the tiles that a wrong pair glues side by side have no seams that fit beside theirs."""
    at = cell_lookup(component[tiles], row[tiles], col[tiles])
    comp, r, c = component[tiles], row[tiles], col[tiles]
    paired = _pair_keys(n, np.minimum(pair_a, pair_b), np.maximum(pair_a, pair_b), np.full(len(pair_a), "LR"))
    out = []
    for rel, (dr, dc) in STEP.items():
        j = at(comp, r + dr, c + dc)
        i = np.flatnonzero(j >= 0)
        u, v = tiles[i], tiles[j[i]]
        holds = np.zeros(len(tiles), bool)  # the seam from each tile to its neighbour in this direction holds
        holds[i] = (np.isin(_pair_keys(n, np.minimum(u, v), np.maximum(u, v), np.full(len(u), "LR")), paired) |
                    seam_fits(u, v, np.full(len(u), rel)))
        beside = np.ones(len(i), bool)
        for side in (1, -1):  # the parallel seams one step across: rows for LR, columns for TB
            k = at(comp[i], r[i] + side * dc, c[i] + side * dr)
            beside &= (k >= 0) & holds[np.maximum(k, 0)]
        bad = ~holds[i] & ~beside
        out.append(np.stack([i[bad], j[i][bad]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def fit_rank(n: int) -> int:
    """How many nearest candidates a seam between tiles placed side by side may reach down to in a set of ``n``
    tiles (FIT_RANK, FIT_TILES)."""
    return int(np.clip(n // FIT_TILES, *FIT_RANK))


def seam_fits(tables: dict[str, EdgeTable]) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A check for :func:`layout`: b is among a's :func:`fit_rank` nearest candidates or a among b's."""
    def fits(a: np.ndarray, b: np.ndarray, rel: np.ndarray) -> np.ndarray:
        ok = np.zeros(len(a), bool)
        for r, t in tables.items():
            sel = rel == r
            k = fit_rank(len(t.fwd))
            ok[sel] = ((t.fwd[a[sel], :k] == b[sel, None]).any(axis=1) |
                       (t.bwd[b[sel], :k] == a[sel, None]).any(axis=1))
        return ok
    return fits


# -- growing ------------------------------------------------------------------------------------------------------
GROW_RATIO = 0.95  # a seam votes for its best candidate only when the second best is at least 5% further
# a placed tile's empty neighbour cell: (row, col) step, the relation, whether the tile is a, the table side
CELL_SIDES = (((1, 0), "TB", True), ((-1, 0), "TB", False), ((0, 1), "LR", True), ((0, -1), "LR", False))


def _cell_keys(n: int, component, row, col) -> np.ndarray:
    """One int64 per (component, row, col): layout positions lie within n steps of their root, so the key is
    bounded by n (2n + 3)^2 and never overflows for any realistic n."""
    span = 2 * n + 3
    return (np.asarray(component, np.int64) * span + (np.asarray(row) + n + 1)) * span + (np.asarray(col) + n + 1)


def grow(tables: dict[str, EdgeTable], place: Placement, known: np.ndarray | None = None) -> Candidates:
    """Pairs that fill empty cells next to placed tiles where every seam around the cell agrees.

    For each empty cell with at least two placed neighbours, each neighbour's facing edge votes for its best
    candidate (when that candidate is clearly ahead of the second, GROW_RATIO); the cell is filled when all votes
    name one tile that is not already in the same mosaic and that no other cell claims. Two independent seams that
    pick the same tile out of 22000 rarely do so by chance, so a seam too ambiguous alone is accepted here. Returns
    the new pairs (one per seam of each filled cell), without those in ``known`` (:func:`_pair_keys`)."""
    n = len(place.component)
    placed = np.flatnonzero(place.component >= 0)
    comp, row, col = place.component[placed], place.row[placed], place.col[placed]
    parts = {f: [] for f in ("key", "tile", "cand", "is_a", "rel", "dist", "ratio")}
    for (dr, dc), rel, is_a, in CELL_SIDES:
        t = tables[rel]
        cand, dist = (t.fwd, t.fwd_d) if is_a else (t.bwd, t.bwd_d)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = dist[placed, 0] / dist[placed, 1]
        parts["key"].append(_cell_keys(n, comp, row + dr, col + dc))
        parts["tile"].append(placed)
        parts["cand"].append(cand[placed, 0])
        parts["is_a"].append(np.full(len(placed), is_a))
        parts["rel"].append(np.full(len(placed), rel))
        parts["dist"].append(dist[placed, 0])
        parts["ratio"].append(np.where(np.isnan(ratio), np.inf, ratio))
    e = {f: np.concatenate(v) if v else np.zeros(0) for f, v in parts.items()}
    if len(placed) == 0:
        return Candidates.concat([])
    occupied = np.isin(e["key"], _cell_keys(n, comp, row, col))
    vote = np.where(e["ratio"] < GROW_RATIO, e["cand"], -1)
    cells, inverse, count = np.unique(e["key"], return_inverse=True, return_counts=True)
    lo = np.full(len(cells), np.iinfo(np.int64).max)
    hi = np.full(len(cells), -2)
    np.minimum.at(lo, inverse, vote)
    np.maximum.at(hi, inverse, vote)
    cell_comp = np.zeros(len(cells), np.int64)
    cell_comp[inverse] = place.component[e["tile"]]
    ok = (count >= 2) & (lo == hi) & (lo >= 0)
    ok[inverse[occupied]] = False
    chosen = np.where(ok, lo, -1)
    ok &= place.component[np.maximum(chosen, 0)] != cell_comp  # not already in this mosaic
    claimed = np.bincount(chosen[ok], minlength=n)
    ok &= claimed[np.maximum(chosen, 0)] == 1  # one cell per tile
    sel = ok[inverse]
    c = lo[inverse[sel]]
    tile, is_a = e["tile"][sel], e["is_a"][sel]
    a, b = np.where(is_a, tile, c), np.where(is_a, c, tile)
    out = Candidates(a, b, e["rel"][sel], e["dist"][sel])
    if known is not None:
        new = ~np.isin(_pair_keys(n, a, b, out.rel), known)
        out = Candidates(a[new], b[new], out.rel[new], out.distance[new])
    return out


JOIN_FITS = 1  # a join of two mosaics needs this many seams that fit besides its own pair, and more than misfit
JOIN_ROWS = 1 << 20  # moved tiles checked at a time (a few int64 arrays of this length)


def join_pairs(tables: dict[str, EdgeTable], place: Placement,
               seam_fits: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Candidates:
    """Pairs that join two mosaics: a best candidate pair (:func:`best_edges`) between tiles of two different
    mosaics, accepted when laying the smaller mosaic next to the larger by this pair puts no two tiles on one cell
    and puts other tiles side by side whose seams confirm it: besides the pair itself, at least JOIN_FITS of them
    fit (``seam_fits``), and more fit than not. Two mosaics that touch along more than the one seam are checked by
    every seam they share; a pair whose join touches nowhere else is left to the ratio test and the loops.
    Candidates that make the same move are checked once, and the moved tiles JOIN_ROWS at a time."""
    comp = place.component
    found = [best_edges(t)[["a", "b"]].assign(rel=rel) for rel, t in tables.items()]
    pairs = pd.concat(found)
    a, b = pairs["a"].to_numpy(np.int64), pairs["b"].to_numpy(np.int64)
    rel = pairs["rel"].to_numpy(str)
    sel = (comp[a] >= 0) & (comp[b] >= 0) & (comp[a] != comp[b])
    a, b, rel = a[sel], b[sel], rel[sel]
    if len(a) == 0:
        return Candidates.concat([])
    size = np.bincount(comp[comp >= 0])
    dr, dc = _steps(rel)
    move_b = size[comp[b]] <= size[comp[a]]  # the smaller mosaic moves next to the larger
    sign = np.where(move_b, 1, -1)
    moved, still = np.where(move_b, b, a), np.where(move_b, a, b)
    shift_r = place.row[still] + sign * dr - place.row[moved]
    shift_c = place.col[still] + sign * dc - place.col[moved]
    joins, which = np.unique(np.stack([comp[still], comp[moved], shift_r, shift_c], axis=1), axis=0,
                             return_inverse=True)
    ok = np.zeros(len(joins), bool)
    placed = np.flatnonzero(comp >= 0)
    members = placed[np.argsort(comp[placed], kind="stable")]  # the placed tiles, mosaic by mosaic
    at = cell_lookup(comp[placed], place.row[placed], place.col[placed])
    rows = np.cumsum(size[joins[:, 1]])
    lo = 0
    while lo < len(joins):  # a loop over chunks of joins, at most JOIN_ROWS moved tiles each (or one join)
        hi = max(int(np.searchsorted(rows, (rows[lo - 1] if lo else 0) + JOIN_ROWS, side="right")), lo + 1)
        ok[lo:hi] = _join_holds(joins[lo:hi], members, placed, place, at, seam_fits)
        lo = hi
    keep = ok[which.ravel()]
    a, b, rel = a[keep], b[keep], rel[keep]
    distance = np.full(len(a), np.inf)
    for r_, t in tables.items():
        s = rel == r_
        distance[s] = pair_distance(t, a[s], b[s])
    return Candidates(a, b, rel, distance)


def _join_holds(joins: np.ndarray, members: np.ndarray, placed: np.ndarray, place: Placement, at,
                seam_fits) -> np.ndarray:
    """For each join (host mosaic, moved mosaic, row shift, col shift): no moved tile on a host cell, and of the
    seams between moved and host tiles at least JOIN_FITS + 1 fit (the join's own pair is one) and more fit than
    the others. ``members``: the placed tiles mosaic by mosaic; ``at``: the cell lookup into ``placed``."""
    comp = place.component
    start = np.searchsorted(comp[members], joins[:, 1])
    count = np.searchsorted(comp[members], joins[:, 1], side="right") - start
    join = np.repeat(np.arange(len(joins)), count)  # one row per (join, moved tile)
    tile = members[np.repeat(start, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)]
    host = joins[join, 0]
    r, c = place.row[tile] + joins[join, 2], place.col[tile] + joins[join, 3]
    collides = np.bincount(join, weights=at(host, r, c) >= 0, minlength=len(joins)) > 0
    fit, misfit = np.zeros(len(joins)), np.zeros(len(joins))
    for (sr, sc), side_rel, tile_is_a in CELL_SIDES:  # each moved tile's four sides against the host mosaic
        k = at(host, r + sr, c + sc)
        h = np.flatnonzero(k >= 0)
        other = placed[k[h]]
        u, v = (tile[h], other) if tile_is_a else (other, tile[h])
        fits = seam_fits(u, v, np.full(len(u), side_rel))
        np.add.at(fit, join[h], fits)
        np.add.at(misfit, join[h], ~fits)
    return ~collides & (fit >= JOIN_FITS + 1) & (fit - 1 > misfit)


def _without(n: int, c: Candidates, known: np.ndarray) -> Candidates:
    """The candidates whose pair is not in ``known`` (:func:`_pair_keys` of ``n`` tiles), each once."""
    keys = _pair_keys(n, c.a, c.b, c.rel)
    _, first = np.unique(keys, return_index=True)
    first = first[~np.isin(keys[first], known)]
    return Candidates(c.a[first], c.b[first], c.rel[first], c.distance[first])


def _pair_keys(n: int, a, b, rel) -> np.ndarray:
    """One int64 per (a, b, relation)."""
    return (np.asarray(a, np.int64) * n + np.asarray(b, np.int64)) * 2 + (np.asarray(rel) == "TB")


# -- whole sets -----------------------------------------------------------------------------------------------------
@dataclass
class Assembly:
    mosaics: Mosaics
    pairs: Pairs
    candidates: int  # pairs accepted by the matching, before the layout's conflicts
    tables: dict[str, EdgeTable] | None = None  # the candidate tables (thresholds, ratios) behind them


def assemble(ids: np.ndarray, images: np.ndarray, ratio: float | None = None) -> Assembly:
    """Match and lay out tiles: the mosaics (tiles with at least one neighbour, mosaics numbered from the largest,
    positions from 0) and the pairs kept (score = cosine similarity of the two edge descriptors).

    The confident pairs are laid out first; then mosaics grow cell by cell (:func:`grow`) and are laid out again,
    until a round adds nothing (at most GROW_ROUNDS)."""
    ids = np.asarray(ids, str)
    n = len(ids)
    tables = edge_tables(images)
    cand = Candidates.concat([confident_pairs(tables, ratio), loop_pairs(tables)])
    fits = seam_fits(tables)
    place = layout(n, cand.a, cand.b, cand.rel, cand.distance, fits)
    for _ in range(GROW_ROUNDS):
        known = _pair_keys(n, cand.a, cand.b, cand.rel)
        kept = Candidates(*(getattr(cand, f)[place.kept] for f in ("a", "b", "rel", "distance")))
        extra = Candidates.concat([grow(tables, place, known), loop_pairs(tables, kept),
                                   join_pairs(tables, place, fits)])
        extra = _without(n, extra, known)
        if len(extra.a) == 0:
            break
        cand = Candidates.concat([cand, extra])
        place = layout(n, cand.a, cand.b, cand.rel, cand.distance, fits)
    tiles = np.flatnonzero(place.component >= 0)
    labels, inverse, sizes = np.unique(place.component[tiles], return_inverse=True, return_counts=True)
    first = np.full(len(labels), len(ids))
    np.minimum.at(first, inverse, tiles)
    rank = np.empty(len(labels), np.int64)
    rank[np.lexsort((first, -sizes))] = np.arange(len(labels))  # largest first, ties by first tile
    mosaic = rank[inverse]
    row, col = place.row[tiles], place.col[tiles]
    r0 = np.full(len(labels), np.iinfo(np.int64).max)
    c0 = r0.copy()
    np.minimum.at(r0, mosaic, row)
    np.minimum.at(c0, mosaic, col)
    mosaics = Mosaics(ids[tiles], mosaic, row - r0[mosaic], col - c0[mosaic])
    k = place.kept
    pairs = Pairs(ids[cand.a[k]], ids[cand.b[k]], cand.rel[k], 1 - cand.distance[k] ** 2 / 2)
    return Assembly(mosaics, pairs, len(cand.a), tables)


def neighbour_shares(mosaics: Mosaics, train_ids: np.ndarray, test_ids: np.ndarray) -> dict:
    """How connected a set is: tiles with a neighbour, and test tiles next to a train tile (counts and shares)."""
    ids = np.concatenate([np.asarray(train_ids, str), np.asarray(test_ids, str)])
    nb = mosaics.neighbours(ids)
    n_train = len(train_ids)
    has = nb.count() > 0
    stacked = np.stack([nb.up, nb.down, nb.left, nb.right])
    next_to_train = ((stacked >= 0) & (stacked < n_train)).any(axis=0)[n_train:]
    n_test = len(ids) - n_train
    return {"tiles": len(ids), "with_neighbour": int(has.sum()),
            "with_neighbour_share": has.mean() if len(ids) else 0.0,
            "train_with_neighbour": int(has[:n_train].sum()), "test_with_neighbour": int(has[n_train:].sum()),
            "test_next_to_train": int(next_to_train.sum()),
            "test_next_to_train_share": next_to_train.mean() if n_test else 0.0}


def true_pairs(truth: Mosaics, ids: np.ndarray, images: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The neighbour pairs of a known layout (``truth``) between tiles of ``ids`` (DataFrames ``a, b, rel`` of
    ids): all of them, and those a seam can show (recoverable: neither facing edge flat, judged on ``images`` in
    ``ids`` order)."""
    ids = np.asarray(ids, str)
    true = truth.adjacent_ids()
    true = true[true["a"].isin(ids) & true["b"].isin(ids)]
    where = pd.Index(ids)
    flat = pd.Series(False, index=true.index)
    for rel in RELATIONS:
        seam = SEAMS[rel]
        sel = true["rel"] == rel
        flat_a = flat_edges(images, seam.first)[where.get_indexer(true.loc[sel, "a"])]
        flat_b = flat_edges(images, seam.second)[where.get_indexer(true.loc[sel, "b"])]
        flat[sel] = flat_a | flat_b
    return true, true[~flat.to_numpy()]


def evaluate(found: Mosaics, truth: Mosaics, ids: np.ndarray, images: np.ndarray) -> dict:
    """Neighbour pairs of ``found`` against a known layout (``truth``, e.g. a synthetic set's).

    precision: found adjacent pairs that are true; recall: true pairs that can be recovered (both tiles present,
    neither facing edge flat, judged on ``images`` in ``ids`` order) and were found.
    """
    key = ["a", "b", "rel"]
    got = found.adjacent_ids()
    true, recoverable = true_pairs(truth, ids, images)
    correct = got.merge(true, on=key).shape[0]
    recovered = got.merge(recoverable, on=key).shape[0]
    return {"found_pairs": len(got), "correct": correct, "recoverable": len(recoverable), "recovered": recovered,
            "true_pairs": len(true), "precision": correct / len(got) if len(got) else 1.0,
            "recall": recovered / len(recoverable) if len(recoverable) else 1.0}


def truth_free(result: "Assembly", ids: np.ndarray, masks: np.ndarray, step_pixels: int = 5) -> dict:
    """Checks that need no true layout, for real data: for adjacent pairs of two train tiles (``masks`` holds the
    first ``len(masks)`` ids' masks), the share whose masks disagree across the seam on more than ``step_pixels``
    pixels (a wrong neighbour usually has a discontinuous mask boundary), and how many of those are a whole edge of
    salt against a whole edge of none (often a labelling artefact of true neighbours) and how many are a side of a
    closed 2x2 square (:func:`in_closed_square`: true neighbours whose labels disagree); the 2x2 squares of
    adjacent tiles (cycles that close) and how many of all the adjacent pairs are a side of one; and the
    best/second-best ratio quartiles of the accepted pairs against the rejected mutual best matches."""
    ids = np.asarray(ids, str)
    where = pd.Index(ids)
    m = result.mosaics
    first, second, rel = m.adjacent()
    a, b = where.get_indexer(m.ids[first]), where.get_indexer(m.ids[second])
    squared = np.logical_or(*_closed_sides(m, first, rel))
    n_train = len(masks)
    tt = (a >= 0) & (b >= 0) & (a < n_train) & (b < n_train)
    disagree = whole = disagree_squared = 0
    for r in RELATIONS:
        sel = tt & (rel == r)
        seam = SEAMS[r]
        ea = edge_lines(masks[a[sel]].astype(np.float32), seam.first, (0,))[:, 0]
        eb = edge_lines(masks[b[sel]].astype(np.float32), seam.second, (0,))[:, 0]
        bad = (ea != eb).sum(axis=1) > step_pixels
        disagree += int(bad.sum())
        disagree_squared += int((bad & squared[sel]).sum())
        full = lambda e: (e.min(axis=1) == e.max(axis=1))  # noqa: E731  (all salt or none along the edge)
        whole += int((bad & full(ea) & full(eb)).sum())
    squares = int(_closed_sides(m, first, rel)[1][rel == "LR"].sum())  # each square once: by its top pair
    out = {"train_train_pairs": int(tt.sum()), "mask_disagree": disagree, "mask_disagree_whole_edges": whole,
           "mask_disagree_share": disagree / max(int(tt.sum()), 1), "mask_disagree_in_squares": disagree_squared,
           "squares": squares, "pairs_in_squares": int(squared.sum()), "adjacent_pairs": len(squared)}
    tables = result.tables
    if tables:
        n = len(ids)
        kept = _pair_keys(n, where.get_indexer(result.pairs.a), where.get_indexer(result.pairs.b), result.pairs.rel)
        acc, rej = [], []
        for r, t in tables.items():
            mutual, worst = ratios(t)
            x = np.flatnonzero(mutual & np.isfinite(worst))
            is_kept = np.isin(_pair_keys(n, x, t.fwd[x, 0], np.full(len(x), r)), kept)
            acc.append(worst[x][is_kept])
            rej.append(worst[x][~is_kept])
        q = lambda v: np.quantile(v, [0.25, 0.5, 0.75]) if v.size else np.full(3, np.nan)  # noqa: E731
        out["ratio_accepted"], out["ratio_rejected"] = q(np.concatenate(acc)), q(np.concatenate(rej))
    return out


def in_closed_square(mosaics: Mosaics, a: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """For adjacent pairs of ``mosaics`` (a: index into it of each pair's a tile, ``rel`` LR or TB, as
    :meth:`Mosaics.adjacent` gives them), whether the pair is a side of a closed 2x2 square: the two cells beside it
    on one side (above an LR pair, or left of a TB pair) or the other are both occupied. A wrong pair rarely sits in
    one: the square's other three seams would have to fit too."""
    return np.logical_or(*_closed_sides(mosaics, a, rel))


def _closed_sides(mosaics: Mosaics, a: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For adjacent pairs (as :func:`in_closed_square` takes them): whether the two cells beside the pair are both
    occupied on its first side (above an LR pair, left of a TB pair), and on its second (below, right)."""
    at = cell_lookup(mosaics.mosaic, mosaics.row, mosaics.col)
    out = np.zeros((2, len(a)), bool)
    for r in RELATIONS:
        sel = np.flatnonzero(rel == r)
        k, row, col = mosaics.mosaic[a[sel]], mosaics.row[a[sel]], mosaics.col[a[sel]]
        dr, dc = STEP[r]  # from a to b
        sr, sc = dc, dr  # across the pair: up/down for LR, left/right for TB
        for i, side in enumerate((-1, 1)):
            out[i, sel] = ((at(k, row + side * sr, col + side * sc) >= 0)
                           & (at(k, row + dr + side * sr, col + dc + side * sc) >= 0))
    return out[0], out[1]


def seam_continuity(mosaics: Mosaics, ids: np.ndarray, images: np.ndarray) -> dict[str, tuple[float, float, int]]:
    """How continuous the mosaics' seams are against the texture inside a tile, with no truth: per seam direction,
    the median correlation of a's edge line with b's facing edge line across each adjacent pair, the median
    correlation of each of the two edge lines with the line next to it in its own tile, and the number of pairs
    (NaN medians for none). True neighbours' seams are as continuous as one line inside a tile: so the half-tile
    test's cuts stand for real seams. A wrong neighbour's seam is far less continuous."""
    where = pd.Index(np.asarray(ids, str))
    first, second, rel = mosaics.adjacent()
    a, b = where.get_indexer(mosaics.ids[first]), where.get_indexer(mosaics.ids[second])
    out = {}
    for r in RELATIONS:
        sel = (rel == r) & (a >= 0) & (b >= 0)
        seam = SEAMS[r]
        la = edge_lines(images[a[sel]].astype(np.float32), seam.first, (0, 1))
        lb = edge_lines(images[b[sel]].astype(np.float32), seam.second, (0, 1))
        median = lambda v: float(np.median(v)) if v.size else float("nan")  # noqa: E731
        across = median(_correlation(la[:, 0], lb[:, 0]))
        inside = median(np.concatenate([_correlation(la[:, 0], la[:, 1]), _correlation(lb[:, 0], lb[:, 1])]))
        out[r] = (across, inside, int(sel.sum()))
    return out


def _correlation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y`` (0 where either row is flat)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    return np.divide((x * y).sum(axis=1), norm, out=np.zeros(len(x), np.float64), where=norm > 0)


def size_histogram(mosaics: Mosaics, edges=(2, 3, 5, 10, 20, 50)) -> list[tuple[str, int]]:
    """How many mosaics have 2, 3-4, 5-9, ... tiles."""
    sizes = mosaics.sizes()
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f"{edges[-1]}+")
    counts = np.bincount(np.searchsorted(edges, sizes, side="right") - 1, minlength=len(edges))
    return list(zip(labels, counts.tolist()))


def build(data_dir: str | os.PathLike, out: str | os.PathLike, ratio: float | None = None, cache: bool = True) -> dict:
    """Assemble a dataset in Kaggle's layout (train and test images together) and write ``out/mosaics.csv`` and
    ``out/pairs.csv`` as a pair (a failure, e.g. a full disk, leaves the previous pair intact); returns a summary
    (counts, shares, mosaic sizes)."""
    train = kaggle.load_train(data_dir, cache=cache)
    test = kaggle.load_test(data_dir, cache=cache)
    ids = np.concatenate([train.ids, test.ids])
    result = assemble(ids, np.concatenate([train.images, test.images]), ratio)
    out = Path(out)
    with atomic_paths(out / MOSAICS_FILE, out / PAIRS_FILE) as (mosaics_tmp, pairs_tmp):
        result.mosaics.write(mosaics_tmp, atomic=False)  # the two files are committed together
        result.pairs.write(pairs_tmp, atomic=False)
    summary = neighbour_shares(result.mosaics, train.ids, test.ids)
    summary.update({"mosaics": int(result.mosaics.sizes().size), "pairs": len(result.pairs),
                    "candidates": result.candidates, "largest": sorted(result.mosaics.sizes().tolist())[::-1][:8],
                    "histogram": size_histogram(result.mosaics), "out": str(out),
                    "thresholds": {r: t.threshold for r, t in (result.tables or {}).items()}})
    return summary
