"""Rebuild the mosaics: which tiles were cut next to each other from one large section (the jigsaw).

Train and test tiles are matched together:

1. edges: for each seam direction, a descriptor of the three lines at and next to each tile's edge (smoothed along
   the edge against pixel noise). A seam between tiles a and b is continuous when smoothness conditions across it
   hold (finite differences that vanish for a smooth field, with a's lines on one side and b's on the other); each
   condition splits into a part of a and a part of b, so the descriptor of a's side and that of b's side are
   compared by distance. Each descriptor is centred and scaled to unit length, which undoes a tile's brightness
   and contrast. Left/right seams use a third difference over two columns each side (sediment varies slowly
   sideways, so the low order amplifies the noise least); top/bottom seams two fourth differences over three rows
   each side (the layers change fast with depth). Flat or near-constant edges get no descriptor and never match;
2. candidates: the two nearest descriptors of every edge among all tiles' opposite edges, both ways, with
   scikit-learn's brute-force search (chunked matrix products: memory stays bounded for 22000 tiles);
3. a pair (a, b) is accepted only when it is unambiguous: b is a's best match and a is b's (mutual), the best
   distance is clearly below the second best in both directions (ratio), below an absolute bound, and not much
   larger than the same distance measured inside the two tiles, between their edge lines and the next ones (a true
   seam looks like the texture on either side of it; this check does not weaken on small sets, where the ratio
   test has few competitors);
4. layout: accepted pairs form a graph; its minimum spanning forest (by distance) places the tiles on integer
   (row, col) positions. A pair that does not close its cycle is dropped (it is the weakest of that cycle); when
   tiles claim one cell, the pair on most of the paths between the clashing tiles is dropped (the weakest of them;
   with a single clash simply the weakest pair on its path), and the layout is redone: a conflict never drops a
   whole mosaic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from datasets import kaggle
from tgs.mosaic import MOSAICS_FILE, PAIRS_FILE, RELATIONS, STEP, Mosaics, Pairs, collisions
from tgs.progress import bar

FLAT_STD = 2.0  # an edge line with a smaller standard deviation (grey levels) is near-constant: never matched
SMOOTH = 1.0  # Gaussian sigma (pixels) along the edge before the descriptors
RATIO = 0.6  # best distance / second best, in both directions, must be below this
SELF_RATIO = 3.0  # seam distance / the same distance inside the two tiles (geometric mean) must be below this


@dataclass(frozen=True)
class Seam:
    """How one seam direction is matched: the smoothness conditions across it and the largest accepted distance.

    A condition has six coefficients over the lines in space order: a's three lines ending at the seam, then b's
    three lines starting at it (for LR: a's columns 98, 99, 100, b's columns 0, 1, 2).
    """

    rel: str
    first: str  # a's side: "right" or "bottom"
    second: str  # b's side: "left" or "top"
    conditions: tuple[tuple[float, ...], ...]
    max_distance: float


SEAMS = {
    "LR": Seam("LR", "right", "left", ((0, -1, 3, -3, 1, 0),), 0.4),
    "TB": Seam("TB", "bottom", "top", ((1, -4, 6, -4, 1, 0), (0, 1, -4, 6, -4, 1)), 0.5),
}


def edge_lines(images: np.ndarray, side: str, offsets=(0, 1, 2)) -> np.ndarray:
    """Lines of each image parallel to a side, at ``offsets`` from the edge inward: (N, len(offsets), 101) float32."""
    o = np.asarray(offsets)
    last = images.shape[1] - 1
    if side == "right":
        lines = images[:, :, last - o].transpose(0, 2, 1)
    elif side == "left":
        lines = images[:, :, o].transpose(0, 2, 1)
    elif side == "bottom":
        lines = images[:, last - o, :]
    elif side == "top":
        lines = images[:, o, :]
    else:
        raise ValueError(f"unknown side {side!r}")
    return np.ascontiguousarray(lines, dtype=np.float32)


def flat_edges(images: np.ndarray, side: str) -> np.ndarray:
    """(N,) bool: the edge line at ``side`` is flat or near-constant (standard deviation below FLAT_STD)."""
    return edge_lines(images, side, (0,))[:, 0].std(axis=1) < FLAT_STD


def _condition_parts(first_lines: np.ndarray, second_lines: np.ndarray, seam: Seam):
    """Unit descriptors of the two sides of a seam, from a's three lines (seam outward) and b's (seam outward)."""
    smooth = lambda x: ndimage.gaussian_filter1d(x, SMOOTH, axis=2, mode="nearest")  # noqa: E731
    a, b = smooth(first_lines), smooth(second_lines)
    first_parts, second_parts = [], []
    for c in seam.conditions:
        c = np.asarray(c, np.float32) / np.linalg.norm(c)
        # a's lines from the seam outward are space positions 2, 1, 0; b's are 3, 4, 5
        first_parts.append(np.einsum("k,nkx->nx", c[2::-1], a))
        second_parts.append(-np.einsum("k,nkx->nx", c[3:], b))
    return _unit(np.concatenate(first_parts, axis=1)), _unit(np.concatenate(second_parts, axis=1))


def descriptors(images: np.ndarray, seam: Seam) -> tuple[np.ndarray, np.ndarray]:
    """Unit descriptors of every tile's ``seam.first`` side and ``seam.second`` side: (N, D) float32 each, such
    that the distance between a's first and b's second is small when b continues a across the seam."""
    return _condition_parts(edge_lines(images, seam.first), edge_lines(images, seam.second), seam)


def interior_distances(images: np.ndarray, seam: Seam) -> tuple[np.ndarray, np.ndarray]:
    """The same seam distance measured inside each tile, between its lines 0-2 and 3-5 from the edge, at its
    ``first`` side and at its ``second`` side: how large a true seam's distance is on this texture."""
    inside = [_condition_parts(edge_lines(images, seam.first, (3, 4, 5)), edge_lines(images, seam.first, (2, 1, 0)),
                               seam),
              _condition_parts(edge_lines(images, seam.second, (2, 1, 0)), edge_lines(images, seam.second, (3, 4, 5)),
                               seam)]
    return tuple(np.linalg.norm(x - y, axis=1) for x, y in inside)


def _unit(parts: np.ndarray) -> np.ndarray:
    parts = parts - parts.mean(axis=1, keepdims=True)
    return (parts / np.maximum(np.linalg.norm(parts, axis=1, keepdims=True), 1e-9)).astype(np.float32)


def _two_nearest(query: np.ndarray, query_tiles: np.ndarray, index: np.ndarray, index_tiles: np.ndarray):
    """For each query row: the nearest and second-nearest index tile other than itself, (best, d1, d2)."""
    from sklearn.neighbors import NearestNeighbors

    best = np.full(len(query), -1, np.int64)
    d1 = np.full(len(query), np.inf)
    d2 = np.full(len(query), np.inf)
    if len(query) == 0 or len(index) == 0:
        return best, d1, d2
    k = min(3, len(index))
    dist, at = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(index).kneighbors(query)
    tiles = index_tiles[at]
    dist = np.where(tiles == query_tiles[:, None], np.inf, dist)  # a tile is never its own neighbour
    order = np.argsort(dist, axis=1, kind="stable")
    dist = np.take_along_axis(dist, order, axis=1)
    tiles = np.take_along_axis(tiles, order, axis=1)
    found = np.isfinite(dist[:, 0])
    best[found] = tiles[found, 0]
    d1[found] = dist[found, 0]
    if k > 1:
        d2 = dist[:, 1]
    return best, d1, d2


@dataclass
class Candidates:
    """Accepted pairs of tile indices: a is left of (LR) or above (TB) b, with their descriptor distance."""

    a: np.ndarray
    b: np.ndarray
    rel: np.ndarray
    distance: np.ndarray


def match(images: np.ndarray, ratio: float = RATIO, seams: dict[str, Seam] = SEAMS) -> Candidates:
    """The unambiguous neighbour pairs among ``images`` (N, 101, 101): mutual best matches whose best distance is
    below ``ratio`` times the second best in both directions, below the seam's absolute bound, and below
    SELF_RATIO times the same distance measured inside the two tiles (:func:`interior_distances`)."""
    found = []
    progress = bar(desc="mosaics: nearest edges", total=2 * len(RELATIONS), unit="search")
    for rel in RELATIONS:
        seam = seams[rel]
        first, second = descriptors(images, seam)
        ok_a = np.flatnonzero(~flat_edges(images, seam.first))
        ok_b = np.flatnonzero(~flat_edges(images, seam.second))
        fwd, fwd_d1, fwd_d2 = _two_nearest(first[ok_a], ok_a, second[ok_b], ok_b)
        progress.update()
        bwd, bwd_d1, bwd_d2 = _two_nearest(second[ok_b], ok_b, first[ok_a], ok_a)
        progress.update()
        back = np.full(len(images), -1, np.int64)  # b -> its best a
        back[ok_b] = bwd
        back_ratio = np.full(len(images), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            back_ratio[ok_b] = bwd_d1 / bwd_d2
            fwd_ratio = fwd_d1 / fwd_d2
        b = fwd
        has = b >= 0
        mutual = has & (back[np.maximum(b, 0)] == ok_a)
        worst = np.maximum(fwd_ratio, back_ratio[np.maximum(b, 0)])
        inside_a, inside_b = interior_distances(images, seam)
        self_ratio = fwd_d1 / np.maximum(np.sqrt(inside_a[ok_a] * inside_b[np.maximum(b, 0)]), 1e-6)
        keep = mutual & (worst < ratio) & (fwd_d1 < seam.max_distance) & (self_ratio < SELF_RATIO)
        found.append(Candidates(ok_a[keep], b[keep], np.full(int(keep.sum()), rel), fwd_d1[keep]))
    progress.close()
    return Candidates(*(np.concatenate([getattr(c, f) for c in found]) for f in ("a", "b", "rel", "distance")))


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


def layout(n: int, a: np.ndarray, b: np.ndarray, rel: np.ndarray, cost: np.ndarray) -> Placement:
    """Lay out ``n`` tiles from pairs (a left of / above b, lower cost = better); see the module docstring."""
    a, b, cost = np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(cost, np.float64)
    dr, dc = _steps(np.asarray(rel, str))
    kept = np.zeros(len(a), bool)
    if len(a):  # one pair per two tiles (two relations between the same tiles cannot both hold): the best one
        key = np.minimum(a, b) * n + np.maximum(a, b)
        order = np.lexsort((cost, key))
        kept[order[np.r_[True, key[order][1:] != key[order][:-1]]]] = True
    while True:  # each round drops the pairs that break cycles and at most one pair behind clashes
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
        if clash.size == 0:
            component = np.where(in_pair, component, -1)
            return Placement(component, np.where(in_pair, row, 0), np.where(in_pair, col, 0), kept)
        kept[live[_culprit(clash, tiles, parent, depth, parent_pair, cost[live])]] = False


# -- whole sets -----------------------------------------------------------------------------------------------------
@dataclass
class Assembly:
    mosaics: Mosaics
    pairs: Pairs
    candidates: int  # pairs accepted by the matching, before the layout's conflicts


def assemble(ids: np.ndarray, images: np.ndarray, ratio: float = RATIO) -> Assembly:
    """Match and lay out tiles: the mosaics (tiles with at least one neighbour, mosaics numbered from the largest,
    positions from 0) and the pairs kept (score = cosine similarity of the two edge descriptors)."""
    ids = np.asarray(ids, str)
    cand = match(images, ratio)
    place = layout(len(ids), cand.a, cand.b, cand.rel, cand.distance)
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
    return Assembly(mosaics, pairs, len(cand.a))


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


def evaluate(found: Mosaics, truth: Mosaics, ids: np.ndarray, images: np.ndarray) -> dict:
    """Neighbour pairs of ``found`` against a known layout (``truth``, e.g. a synthetic set's).

    precision: found adjacent pairs that are true; recall: true pairs that can be recovered (both tiles present,
    neither facing edge flat, judged on ``images`` in ``ids`` order) and were found.
    """
    ids = np.asarray(ids, str)
    key = ["a", "b", "rel"]
    got = found.adjacent_ids()
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
    recoverable = true[~flat.to_numpy()]
    correct = got.merge(true, on=key).shape[0]
    recovered = got.merge(recoverable, on=key).shape[0]
    return {"found_pairs": len(got), "correct": correct, "recoverable": len(recoverable), "recovered": recovered,
            "true_pairs": len(true), "precision": correct / len(got) if len(got) else 1.0,
            "recall": recovered / len(recoverable) if len(recoverable) else 1.0}


def size_histogram(mosaics: Mosaics, edges=(2, 3, 5, 10, 20, 50)) -> list[tuple[str, int]]:
    """How many mosaics have 2, 3-4, 5-9, ... tiles."""
    sizes = mosaics.sizes()
    labels = [f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}" for lo, hi in zip(edges[:-1], edges[1:])]
    labels.append(f"{edges[-1]}+")
    counts = np.bincount(np.searchsorted(edges, sizes, side="right") - 1, minlength=len(edges))
    return list(zip(labels, counts.tolist()))


def build(data_dir: str | os.PathLike, out: str | os.PathLike, ratio: float = RATIO, cache: bool = True) -> dict:
    """Assemble a dataset in Kaggle's layout (train and test images together) and write ``out/mosaics.csv`` and
    ``out/pairs.csv`` atomically; returns a summary (counts, shares, mosaic sizes)."""
    train = kaggle.load_train(data_dir, cache=cache)
    test = kaggle.load_test(data_dir, cache=cache)
    ids = np.concatenate([train.ids, test.ids])
    result = assemble(ids, np.concatenate([train.images, test.images]), ratio)
    out = Path(out)
    result.mosaics.write(out / MOSAICS_FILE)
    result.pairs.write(out / PAIRS_FILE)
    summary = neighbour_shares(result.mosaics, train.ids, test.ids)
    summary.update({"mosaics": int(result.mosaics.sizes().size), "pairs": len(result.pairs),
                    "candidates": result.candidates, "largest": sorted(result.mosaics.sizes().tolist())[::-1][:8],
                    "histogram": size_histogram(result.mosaics), "out": str(out)})
    return summary
