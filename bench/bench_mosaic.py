#!/usr/bin/env python
"""Mosaic assembly benchmark: time, memory and quality of mosaic.py on a Kaggle-sized set.

    python -m bench.bench_mosaic                       # makes a 4000 + 18000 synthetic set in a temp folder
    python -m bench.bench_mosaic --data DATA           # a set in Kaggle's layout: the real data, or a synthetic set

With a synthetic set (DATA/synthetic-layout.csv present) it also measures precision and recall against the true
layout. Every set gets the checks that need no truth: tiles placed, pairs, mosaic sizes, for pairs of two train
tiles the share whose masks disagree across the seam, the 2x2 squares that close, the best/second-best ratios
of the accepted pairs against the rejected mutual best matches, how continuous the seams are against the texture
inside a tile, the half-tile test, the hole test and the leftover test (the unplaced tiles' edges and the mosaics'
borders, over the whole ratio range).

Prints a table: loading, matching + layout, total time; the peak memory of the process; precision of the
neighbour pairs in the mosaics and recall of the pairs that can be recovered (both tiles present, neither facing
edge flat), measured against the true layout; the share of tiles with a neighbour and of test tiles next to a
train tile, true and found. Targets: at most 30 s for 22000 tiles on 2 cores, precision >= 0.999, recall >= 0.95.
Nothing here is asserted by the tests.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench import dataset
from datasets import folds, kaggle, mosaic, synthetic
from tgs.mosaic import STEP, Mosaics, cell_lookup


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder in Kaggle's layout (default: generate --train + --test synthetic "
                                  "tiles)")
    p.add_argument("--train", type=int, default=4000)
    p.add_argument("--test", type=int, default=18000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ratio", type=float, default=None)
    args = p.parse_args()
    with dataset(args.data, args.train, args.test, args.seed) as data:
        return measure(args, data)


FOLDS = 10  # datasets.folds' default


def mosaic_fold_split(train, found: Mosaics, truth: Mosaics) -> tuple[int, int]:
    """Mosaic folds made from the ``found`` mosaics (datasets.folds, as ensemble.py --mosaic-folds makes them):
    how many of the true train-train neighbour pairs they split between training and validation, of how many."""
    return folds.crossing_pairs(train.ids, folds.neighbour_folds(train, found, FOLDS), truth)


HALF_CUT = 30  # the half-tile test cuts each tile this many lines in (not half way: some real tiles overlap by half)
PARTNERED = 0.16  # share of the half-tile test's edges that have their partner among the candidates, as in the real set


def half_tile_test(images: np.ndarray, tables: dict[str, mosaic.EdgeTable], seed: int = 0,
                   unplaced: np.ndarray | None = None) -> dict[str, dict]:
    """A truth on any set, the real data included: each tile cut across a seam direction HALF_CUT lines in; the
    first pieces of one random half of the tiles are the queries, the second pieces of another half the candidates,
    the two halves sharing PARTNERED of their tiles. Per direction: how many queries have their partner among the
    candidates, the share of those whose partner is their mutual best match (the seam score's ranking on the set's
    own texture), the share also below the set's calibrated ratio threshold, and how many queries are wrongly
    matched below it (the filters and thresholds of ``tables``). With ``unplaced`` (a mask over the set: the tiles
    the mosaics leave out), also how many queries of those tiles have their partner among the candidates and the
    share whose partner is a mutual best match below LEFT_RATIO: how often the leftover test would see a true seam
    of theirs, were it as continuous as their own texture."""
    n = len(images)
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    overlap = int(round(PARTNERED * half))
    queries, candidates = np.sort(order[:half]), np.sort(order[half - overlap:2 * half - overlap])
    out = {}
    for rel, table in tables.items():
        seam, filters = mosaic.SEAMS[rel], table.filters
        if filters is None:
            continue
        first = mosaic.halves(images[queries], seam, HALF_CUT)[0]
        second = mosaic.halves(images[candidates], seam, HALF_CUT)[1]
        ok_q = np.flatnonzero(~mosaic.flat_edges(first, seam.first))
        ok_c = np.flatnonzero(~mosaic.flat_edges(second, seam.second))
        q = mosaic.descriptors(first[ok_q], seam, filters)[0]
        c = mosaic.descriptors(second[ok_c], seam, filters)[1]
        # one index space: query tile t is row t, candidate tile t is row n + t (so a tile's halves are not "itself")
        fwd, bwd = np.full((2 * n, 2), -1, np.int64), np.full((2 * n, 2), -1, np.int64)
        fwd_d, bwd_d = np.full((2 * n, 2), np.inf), np.full((2 * n, 2), np.inf)
        rows_q, rows_c = queries[ok_q], candidates[ok_c] + n
        fwd[rows_q], fwd_d[rows_q], bwd[rows_c], bwd_d[rows_c] = mosaic.nearest_both(q, rows_q, c, rows_c, 2)
        mutual, worst = mosaic.ratios(mosaic.EdgeTable(rel, fwd, fwd_d, bwd, bwd_d, table.threshold))
        has = np.isin(queries, rows_c - n) & np.isin(queries, rows_q)
        right = fwd[queries, 0] == queries + n
        below = mutual[queries] & (worst[queries] < table.threshold)
        out[rel] = {"with_partner": int(has.sum()),
                    "mutual_best": float((mutual[queries] & right).sum() / max(has.sum(), 1)),
                    "accepted": float((below & right).sum() / max(has.sum(), 1)), "wrong": int((below & ~right).sum())}
        if unplaced is not None:
            theirs = has & unplaced[queries]
            seen = theirs & right & mutual[queries] & (worst[queries] < LEFT_RATIO)
            out[rel] |= {"unplaced_with_partner": int(theirs.sum()),
                         "unplaced_seen": float(seen.sum() / max(theirs.sum(), 1))}
    return out


def edge_descriptors(images: np.ndarray, tables: dict[str, mosaic.EdgeTable]) -> dict[str, tuple]:
    """Per seam direction with filters: every tile's descriptors of its two sides and which of them are flat,
    (first, second, flat first, flat second), computed once for the checks below."""
    out = {}
    for rel, table in tables.items():
        seam = mosaic.SEAMS[rel]
        if table.filters is not None:
            out[rel] = (*mosaic.descriptors(images, seam, table.filters),
                        mosaic.flat_edges(images, seam.first), mosaic.flat_edges(images, seam.second))
    return out


def layout_arrays(ids: np.ndarray, found: Mosaics) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Callable]:
    """The ``found`` mosaics over the set's tiles: each tile's mosaic (-1 for an unplaced tile), row and column,
    the placed tiles, and their cell lookup (tgs.mosaic.cell_lookup: an index into the placed tiles, or -1)."""
    n = len(ids)
    where = found.index_of(ids)
    placed = where >= 0
    comp = np.full(n, -1, np.int64)
    row, col = np.zeros(n, np.int64), np.zeros(n, np.int64)
    comp[placed], row[placed], col[placed] = (found.mosaic[where[placed]], found.row[where[placed]],
                                              found.col[where[placed]])
    tiles = np.flatnonzero(placed)
    return comp, row, col, tiles, cell_lookup(comp[tiles], row[tiles], col[tiles])


HOLE_RATIO = 0.8  # a cell is fillable when its best unplaced tile is this much nearer than the second best
HOLE_CONTROL = 1000  # occupied cells (at most) whose tile is taken out and looked for, as the hole test's control
HOLE_CHUNK = 256  # cells scored at a time (a pool x HOLE_CHUNK block of sums)


def hole_test(ids: np.ndarray, found: Mosaics, sides_of: dict[str, tuple], seed: int = 0) -> dict[str, int]:
    """Whether the empty cells inside the mosaics hold a tile that the matcher missed. For every empty cell with two
    or more placed neighbours (a hole), every unplaced tile is scored on all the cell's seams together (the sum of
    its squared descriptor distances to the facing edges); the hole is fillable when the best tile's sum is below
    HOLE_RATIO^2 of the second best's. The control does the same for occupied cells with their tile put back among
    the unplaced ones (it should be found), and without it (the null: nothing should be). ``sides_of``: the
    :func:`edge_descriptors` of the set."""
    comp, row, col, tiles, at = layout_arrays(ids, found)
    placed = comp >= 0
    if set(sides_of) != set(mosaic.RELATIONS):
        return {}
    sides = []  # per cell side: its step, the cell tile's descriptors and flat edges there, the neighbour's
    for (dr, dc), rel, cell_is_a in mosaic.CELL_SIDES:
        first, second, flat_first, flat_second = sides_of[rel]
        mine, theirs = ((first, flat_first), (second, flat_second))[::1 if cell_is_a else -1]
        sides.append(((dr, dc), *mine, *theirs))
    empty = []
    for (dr, dc), *_ in sides:  # the empty cells next to a placed tile
        e = at(comp[tiles], row[tiles] + dr, col[tiles] + dc) < 0
        empty.append(np.stack([comp[tiles][e], row[tiles][e] + dr, col[tiles][e] + dc], axis=1))
    hole_cells = np.unique(np.concatenate(empty), axis=0) if empty else np.zeros((0, 3), np.int64)
    keys = np.concatenate([hole_cells, np.stack([comp[tiles], row[tiles], col[tiles]], axis=1)])
    occupant = np.concatenate([np.full(len(hole_cells), -1), tiles])

    def best_ratio(cell_rows: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        parts = [best_chunk(cell_rows[i:i + HOLE_CHUNK], pool) for i in range(0, len(cell_rows), HOLE_CHUNK)]
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        return tuple(np.concatenate(p) for p in zip(*parts))

    def best_chunk(cell_rows: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        total = np.zeros((len(pool), len(cell_rows)))
        seams = np.zeros(len(cell_rows), np.int64)
        for (dr, dc), mine, mine_flat, theirs, theirs_flat in sides:
            k = at(keys[cell_rows, 0], keys[cell_rows, 1] + dr, keys[cell_rows, 2] + dc)
            nb = np.where(k >= 0, tiles[np.maximum(k, 0)], -1)
            use = np.flatnonzero((nb >= 0) & ~theirs_flat[np.maximum(nb, 0)])
            d = 2 - 2 * (mine[pool] @ theirs[nb[use]].T).astype(np.float64)
            total[:, use] += np.where(mine_flat[pool, None], 2.0, d)  # a flat side fits nothing
            seams[use] += 1
        if len(pool) < 2:
            return seams, np.full(len(cell_rows), np.inf), np.full(len(cell_rows), -1)
        top = np.argsort(total, axis=0)[:2]
        pick = np.arange(len(cell_rows))
        ratio = np.sqrt(total[top[0], pick] / np.maximum(total[top[1], pick], 1e-12))
        return seams, ratio, pool[top[0]]

    unplaced = np.flatnonzero(~placed)
    out = {}
    holes = np.flatnonzero(occupant < 0)
    seams, ratio, _ = best_ratio(holes, unplaced)
    out["holes"] = int((seams >= 2).sum())
    out["holes_fillable"] = int(((seams >= 2) & (ratio < HOLE_RATIO)).sum())
    full = np.flatnonzero(occupant >= 0)
    control = np.random.default_rng(seed).permutation(full)[:HOLE_CONTROL]
    seams, null_ratio, _ = best_ratio(control, unplaced)
    control, null_ratio = control[seams >= 2], null_ratio[seams >= 2]
    _, back_ratio, back = best_ratio(control, np.concatenate([unplaced, occupant[control]]))
    out["control"] = len(control)
    out["control_found"] = int(((back == occupant[control]) & (back_ratio < HOLE_RATIO)).sum())
    out["control_null"] = int((null_ratio < HOLE_RATIO).sum())
    return out


LEFT_BINS = (0.8, 0.9, 0.95)  # the leftover test's ratio bins: below 0.8 (where a seam could be accepted), then up to 1
LEFT_RATIO = LEFT_BINS[0]


def leftover_test(ids: np.ndarray, images: np.ndarray, result: mosaic.Assembly, sides_of: dict[str, tuple],
                  truth: Mosaics | None = None) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """How many true pairs the open edges may still hide, with no truth. Open edges are the unplaced tiles' a sides
    ("unplaced") and the placed tiles' a sides that face an empty cell ("border"): between them they hold every
    seam the mosaics do not, each once. Per seam direction and population, binned by their best/second-best ratio
    (below LEFT_RATIO, then LEFT_BINS up to 1): the edges whose best candidate is a mutual best match ("seen"),
    against the number that chance gives ("chance"): the same count for the null queries of the same tiles
    (mosaic.null_matches: lines inside them, which have no partner among the edges), scaled to the number of edges.
    An excess is the true pairs left. With the ``truth`` (a synthetic layout), "true" too: how many of those seen
    are the edge's true partner, which the excess estimates. ``sides_of``: the :func:`edge_descriptors` of the
    set."""
    comp, row, col, tiles, at = layout_arrays(ids, result.mosaics)
    partners = None if truth is None else _true_partners(ids, images, truth)
    out = {}
    for rel, (_, second, flat_first, flat_second) in sides_of.items():
        dr, dc = STEP[rel]
        border = np.zeros(len(ids), bool)
        border[tiles] = at(comp[tiles], row[tiles] + dr, col[tiles] + dc) < 0
        partner = None if truth is None else partners[rel]
        out[rel] = {name: _open_edges(images, result.tables[rel], second, flat_second, edges & ~flat_first, partner)
                    for name, edges in (("unplaced", comp < 0), ("border", border))}
    return out


def _true_partners(ids: np.ndarray, images: np.ndarray, truth: Mosaics) -> dict[str, np.ndarray]:
    """Per seam direction, each tile's true b neighbour (an index into ``ids``), -1 for none or for one that no
    seam can show (mosaic.true_pairs: a facing edge flat)."""
    _, recoverable = mosaic.true_pairs(truth, ids, images)
    where = pd.Index(np.asarray(ids, str))
    out = {}
    for rel in mosaic.RELATIONS:
        pairs = recoverable[recoverable["rel"] == rel]
        out[rel] = np.full(len(ids), -1, np.int64)
        out[rel][where.get_indexer(pairs["a"])] = where.get_indexer(pairs["b"])
    return out


def _ratio_bin(ratio: np.ndarray) -> np.ndarray:
    """The leftover bin of each best/second-best ratio: 0 below LEFT_RATIO, ..., len(LEFT_BINS) from LEFT_BINS[-1]
    up, ties (1) and NaN included."""
    return np.searchsorted(np.asarray(LEFT_BINS), np.nan_to_num(ratio, nan=1.0), side="right")


def _open_edges(images: np.ndarray, table: mosaic.EdgeTable, second: np.ndarray, flat_second: np.ndarray,
                edges: np.ndarray, partner: np.ndarray | None) -> dict[str, np.ndarray]:
    """The leftover test for one population of a sides (``edges``, a mask over the set), per ratio bin: "seen",
    "chance" and, with the true ``partner`` of each tile, "true"."""
    bins = len(LEFT_BINS) + 1
    mutual, worst = mosaic.ratios(table)
    seen = mutual & edges
    where = _ratio_bin(worst[seen])
    out = {"seen": np.bincount(where, minlength=bins), "chance": np.zeros(bins)}
    if partner is not None:
        out["true"] = np.bincount(where[table.fwd[seen, 0] == partner[seen]], minlength=bins)
    ok_b = np.flatnonzero(~flat_second)
    if not edges.any() or len(ok_b) < 2:
        return out
    seam = mosaic.SEAMS[table.rel]
    shares = []
    for _, best, d in mosaic.null_matches(images, seam, table.filters, second, ok_b, np.flatnonzero(edges)):
        b = np.maximum(best[:, 0], 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            theirs = d[:, 0] / table.bwd_d[b, 0]  # the query would be b's best: b's ratio is then this
            ratio = np.maximum(d[:, 0] / d[:, 1], theirs)
        hit = (best[:, 0] >= 0) & (theirs < 1)
        shares.append(np.bincount(_ratio_bin(ratio[hit]), minlength=bins) / max(len(d), 1))
    out["chance"] = np.mean(shares, axis=0) * int(edges.sum())
    return out


def leftover_rows(test: dict[str, dict[str, dict[str, np.ndarray]]]) -> list[tuple[str, str, str]]:
    """The leftover test's rows of the table: below LEFT_RATIO, then the higher bins on one row each (with the
    truth: / true partners among them)."""
    label = {"unplaced": "unplaced tiles'", "border": "mosaic borders'"}
    edges = (0.0, *LEFT_BINS, 1.0)
    rows = []
    for name in label:
        for rel, populations in test.items():
            by = populations[name]
            parts = [by[key] for key in ("seen", "chance", "true") if key in by]
            cell = [" / ".join(f"{part[i]:.0f}" for part in parts) for i in range(len(LEFT_BINS) + 1)]
            suffix = " / true" if "true" in by else ""
            rows.append((f"{label[name]} mutual best matches < {LEFT_RATIO} {rel}: seen / by chance{suffix}",
                         cell[0], ""))
            rows.append((f"  ratio {', '.join(f'{lo:g}-{hi:g}' for lo, hi in zip(edges[1:-1], edges[2:]))}",
                         ", ".join(cell[1:]), ""))
    return rows


def continuity_rows(test: dict[str, tuple[float, float, int]]) -> list[tuple[str, str, str]]:
    """The seam continuity check's rows of the table."""
    return [(f"seam correlation {rel}: across pairs / one line in", f"{across:.3f} / {inside:.3f} of {pairs}", "")
            for rel, (across, inside, pairs) in test.items()]


def hole_rows(test: dict[str, int]) -> list[tuple[str, str, str]]:
    """The hole test's rows of the table."""
    if not test:
        return []
    return [("holes (empty cells, 2+ placed neighbours) / an unplaced tile fits them",
             f"{test['holes']} / {test['holes_fillable']}", ""),
            ("  control: occupied cells / their tile found again / found without it",
             f"{test['control']} / {test['control_found']} / {test['control_null']}", "")]


def half_tile_rows(test: dict[str, dict]) -> list[tuple[str, str, str]]:
    """The half-tile test's rows of the table."""
    rows = []
    for rel, r in test.items():
        rows.append((f"half-tile test {rel}: partner mutual best / also accepted",
                     f"{r['mutual_best']:.3f} / {r['accepted']:.3f} of {r['with_partner']}", ""))
        rows.append((f"half-tile test {rel}: queries wrongly accepted", f"{r['wrong']}", ""))
        if "unplaced_seen" in r:
            rows.append((f"  unplaced tiles' queries: partner mutual best < {LEFT_RATIO}",
                         f"{r['unplaced_seen']:.3f} of {r['unplaced_with_partner']}", ""))
    return rows


def measure(args, data: str) -> int:
    """Time the steps on the dataset folder ``data`` and print the table."""
    t0 = time.perf_counter()
    train = kaggle.load_train(data, cache=False)
    test = kaggle.load_test(data, cache=False)
    ids = np.concatenate([train.ids, test.ids])
    images = np.concatenate([train.images, test.images])
    t1 = time.perf_counter()
    result = mosaic.assemble(ids, images, args.ratio)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tgs-bench-mosaic-out-") as out:
        result.mosaics.write(Path(out) / "mosaics.csv")
        result.pairs.write(Path(out) / "pairs.csv")
    t3 = time.perf_counter()

    synthetic_set = (Path(data) / synthetic.LAYOUT_FILE).is_file()
    truth = None
    if synthetic_set:
        layout = synthetic.read_layout(data).set_index("id").loc[ids]
        truth = Mosaics(ids, layout["section"], layout["row"], layout["col"])
    free = mosaic.truth_free(result, ids, train.masks)
    sides = edge_descriptors(images, result.tables or {})
    thresholds = ", ".join(f"{r} {t.threshold:.3f}" for r, t in (result.tables or {}).items())
    rows = [
        ("tiles (train + test)", f"{len(ids)} ({len(train)} + {len(test)})", ""),
        ("load PNGs (s)", f"{t1 - t0:.1f}", ""),
        ("match + layout (s)", f"{t2 - t1:.1f}", ""),
        ("write mosaics.csv + pairs.csv (s)", f"{t3 - t2:.2f}", ""),
        ("total (s)", f"{t3 - t0:.1f}", "<= 30"),
        ("peak memory of the process (MB)", f"{peak_mb():.0f}", "<= 1500"),
        ("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f}", ""),
        ("calibrated ratio thresholds", thresholds, ""),
        ("pairs matched / kept by the layout", f"{result.candidates} / {len(result.pairs)}", ""),
        ("mosaics / tiles placed", f"{result.mosaics.sizes().size} / {len(result.mosaics)}", ""),
        ("adjacent pairs in the mosaics", f"{len(result.mosaics.adjacent_ids())}", ""),
        ("2x2 squares that close", f"{free['squares']}", ""),
        ("squares that close by chance (an impossible geometry)",
         f"{len(mosaic.loops(result.tables, impossible=True))}" if result.tables else "-", ""),
        ("train-train pairs / masks disagree across the seam",
         f"{free['train_train_pairs']} / {free['mask_disagree']} ({free['mask_disagree_share']:.1%})", ""),
        ("  of which salt on a whole edge against none", f"{free['mask_disagree_whole_edges']}", ""),
        ("  of which in a closed 2x2 square", f"{free['mask_disagree_in_squares']}", ""),
        ("adjacent pairs in a closed 2x2 square",
         f"{free['pairs_in_squares']} of {free['adjacent_pairs']}"
         f" ({free['pairs_in_squares'] / max(free['adjacent_pairs'], 1):.1%})", ""),
        ("ratio quartiles: accepted pairs", " ".join(f"{v:.2f}" for v in free["ratio_accepted"]), ""),
        ("ratio quartiles: rejected mutual best matches", " ".join(f"{v:.2f}" for v in free["ratio_rejected"]), ""),
        *continuity_rows(mosaic.seam_continuity(result.mosaics, ids, images)),
        *half_tile_rows(half_tile_test(images, result.tables or {},
                                       unplaced=result.mosaics.index_of(ids) < 0)),
        *hole_rows(hole_test(ids, result.mosaics, sides)),
        *leftover_rows(leftover_test(ids, images, result, sides, truth)),
        ("largest mosaics", ", ".join(map(str, sorted(result.mosaics.sizes().tolist())[::-1][:6])), ""),
        ("mosaic sizes", ", ".join(f"{label}: {count}" for label, count in mosaic.size_histogram(result.mosaics)), ""),
    ]
    if truth is not None:
        quality = mosaic.evaluate(result.mosaics, truth, ids, images)
        true_shares = mosaic.neighbour_shares(truth, train.ids, test.ids)
        found_shares = mosaic.neighbour_shares(result.mosaics, train.ids, test.ids)
        split, pairs = mosaic_fold_split(train, result.mosaics, truth)
        rows += [
            ("adjacent pairs found / correct", f"{quality['found_pairs']} / {quality['correct']}", ""),
            ("precision", f"{quality['precision']:.5f}", ">= 0.999"),
            ("recoverable true pairs / recovered", f"{quality['recoverable']} / {quality['recovered']}", ""),
            ("recall of recoverable pairs", f"{quality['recall']:.4f}", ""),
            ("tiles with a neighbour: true / found",
             f"{true_shares['with_neighbour_share']:.1%} / {found_shares['with_neighbour_share']:.1%}", ""),
            ("test tiles next to a train tile: true / found",
             f"{true_shares['test_next_to_train_share']:.1%} / {found_shares['test_next_to_train_share']:.1%}", ""),
            (f"mosaic folds (k={FOLDS}): true train-train pairs split",
             f"{split} / {pairs} ({split / max(pairs, 1):.1%})", "<= 10%"),
        ]
    kind = "synthetic sections" if synthetic_set else "a dataset (no true layout)"
    print(f"\n{'mosaic.py on ' + kind:50s} {'value':>34s}  target   (cpu cores: {os.cpu_count()})")
    for name, value, target in rows:
        print(f"{name:50s} {value:>34s}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
