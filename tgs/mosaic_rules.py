"""Post-processing rules that use the known train masks on the mosaic grid (:class:`tgs.mosaic.Mosaics`).

They run after the ordinary steps of :func:`tgs.postprocess.apply` (threshold, min area, gate, flat), on the
masks of the predicted tiles, with the layout and the masks that may be used as truth (all train masks at test
time; at out-of-fold evaluation only those of the other folds). Each rule is named and switchable; the enabled ones
run in the order of :data:`RULES`, and a tile one rule has set is left alone by the later ones (so each tile is set
by at most one rule). A tile whose mask is known is never changed. Walks run along the columns of the grid: from a
known tile down through the cells below it while they hold tiles whose mask is unknown, and they stop at the next
known tile, at an empty cell (no tile there: what lies beyond is not known to continue it) or at the mosaic's edge.

- ``vertical``: a known mask is *softly vertical* when its last :data:`VERTICAL_ROWS` rows are equal and that row is
  partly salt (some but not all pixels), *vertical* when all its rows are equal and partly salt. Below a softly
  vertical known tile, the walk's tiles get its last row repeated on every row; the tile just above a vertical one
  (not set by a walk from above) gets its first row repeated. A salt wall continues down the section.
- ``empty-below``: below a known tile whose bottom row is all salt, the walk's tiles become empty (the rule as the
  issue states it; the out-of-fold search judges it).
- ``boundary``: a tile predicted empty next to a known tile whose facing edge line is partly salt gets that
  boundary continued into it, along the vertical axis first (the known tile above, whose bottom row faces it, and
  the one below, whose top row does), else along the horizontal axis (left and right, their facing columns):
  extruded across the tile from one side when the opposite neighbour is not known, and interpolated between the two
  facing lines when both are known. The interpolation blends the lines' signed distances to their salt boundary
  (``+d`` inside salt, ``-d`` outside; a line that is all salt or all background counts as :data:`FAR` pixels from
  a boundary) linearly across the tile, so a salt run moves, grows or shrinks steadily from one edge to the other.
- ``fill-holes``: holes of each predicted mask are filled (background not 4-connected to the tile's border
  becomes salt), every predicted tile in a mosaic or not.

:func:`apply_rules` is the whole step; :class:`Context` holds the layout and the known masks' edges once, for a
caller that applies several sets of rules with the same known masks (the out-of-fold search). Everything is
vectorised over tiles: the only loops are over the few steps of a column walk and over blocks of tiles.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from tgs.errors import UserError, excerpt
from tgs.registry import Registry

if TYPE_CHECKING:  # pandas and the mosaic reader load only where rules run, not for a script's --help
    from tgs.mosaic import Mosaics

MOSAIC_RULES = Registry("mosaic rule")  # filled below, in the order the rules run; RULES: their names
VERTICAL_ROWS = 15  # a known mask whose last 15 rows are equal (and partly salt) is softly vertical
FAR = 50  # signed distance (pixels) given to an edge line without a salt boundary (about half a tile)
_BLOCK = 1024  # tiles per hole-filling call (bounds scipy's temporaries)
_CROSS = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)  # 4-connected within a tile, never across tiles


def parse_rules(names: str | Iterable[str], where: str = "--mosaic-rules") -> tuple[str, ...]:
    """Rule names (a comma-separated string or a list; ``none`` or empty: no rule) as a tuple in the order of
    :data:`RULES`; an unknown name is one UserError line naming ``where``."""
    if isinstance(names, str):
        names = [] if names.strip().lower() in ("", "none", "off") else names.split(",")
    names = [str(n).strip() for n in names]
    bad = [n for n in names if n not in RULES]
    if bad:
        raise UserError(f"{where}: unknown mosaic rule {excerpt(bad[0])} (the rules: {', '.join(RULES)})")
    return tuple(r for r in RULES if r in names)


# -- edge lines and signed distances ----------------------------------------------------------------------------
def partly_salt(lines: np.ndarray) -> np.ndarray:
    """(..., L) bool lines -> (...) bool: some but not all pixels are salt."""
    return lines.any(axis=-1) & ~lines.all(axis=-1)


def _distance_to(target: np.ndarray) -> np.ndarray:
    """For (K, L) bool lines, each pixel's distance (pixels) to the nearest True pixel of its line (inf if none)."""
    k, length = target.shape
    at = np.broadcast_to(np.arange(length, dtype=np.float64), (k, length))
    before = np.maximum.accumulate(np.where(target, at, -np.inf), axis=1)
    after = np.minimum.accumulate(np.where(target, at, np.inf)[:, ::-1], axis=1)[:, ::-1]
    return np.minimum(at - before, after - at)


def signed_distance(lines: np.ndarray) -> np.ndarray:
    """(K, L) bool -> (K, L) float: ``+(d - 0.5)`` on salt pixels, ``-(d - 0.5)`` on background, where d is the
    distance to the nearest pixel of the other kind (so the boundary lies at 0, between the two pixels); a line
    without a boundary is ``+FAR`` (all salt) or ``-FAR`` (no salt)."""
    lines = np.asarray(lines, bool)
    if lines.size == 0:
        return np.zeros(lines.shape)
    inside, outside = _distance_to(~lines) - 0.5, _distance_to(lines) - 0.5
    sdf = np.where(lines, inside, -outside)
    return np.clip(sdf, -FAR, FAR)


def interpolate(first: np.ndarray, second: np.ndarray, steps: int) -> np.ndarray:
    """(K, L) bool lines on both sides of a tile -> (K, steps, L) bool: the signed distances blended linearly, line
    ``i`` at ``t = (i + 1) / (steps + 1)`` of the way from ``first`` (just before line 0) to ``second`` (just after
    the last line); salt where the blend is positive."""
    t = (np.arange(steps, dtype=np.float64) + 1) / (steps + 1)
    a, b = signed_distance(first), signed_distance(second)
    return ((1 - t)[None, :, None] * a[:, None, :] + t[None, :, None] * b[:, None, :]) > 0


# -- the known masks on the board -----------------------------------------------------------------------------------
@dataclass
class Edges:
    """What the rules read of the known masks placed on the board, one row per such tile."""

    top: np.ndarray  # (K, W) first row
    bottom: np.ndarray  # (K, W) last row
    left: np.ndarray  # (K, H) first column
    right: np.ndarray  # (K, H) last column
    vertical: np.ndarray  # (K,) all rows equal, partly salt
    soft: np.ndarray  # (K,) the last VERTICAL_ROWS rows equal, partly salt
    bottom_full: np.ndarray  # (K,) the last row is all salt

    @classmethod
    def of(cls, masks: np.ndarray) -> "Edges":
        masks = np.asarray(masks, bool)
        bottom = masks[:, -1]
        partly = partly_salt(bottom)
        tail = masks[:, -min(VERTICAL_ROWS, masks.shape[1]):]
        soft = partly & (tail == bottom[:, None]).all(axis=(1, 2))
        vertical = soft & (masks == bottom[:, None]).all(axis=(1, 2))
        return cls(masks[:, 0].copy(), bottom.copy(), masks[:, :, 0].copy(), masks[:, :, -1].copy(), vertical,
                   soft, bottom.all(axis=1))


@dataclass
class Outcome:
    """The masks after the rules and, per enabled rule, which tiles it changed (masks that differ) and which it
    set (``touched``: also those it set to what they were, which later rules then leave alone)."""

    masks: np.ndarray  # (N, H, W) bool
    changed: dict  # rule -> (N,) bool
    touched: dict  # rule -> (N,) bool

    def counts(self) -> dict:
        return {r: int(c.sum()) for r, c in self.changed.items()}

    def line(self) -> str:
        """``vertical 12 tiles, boundary 3 tiles`` (every enabled rule, also those that changed nothing)."""
        return ", ".join(f"{r} {n} tile{'s' if n != 1 else ''}" for r, n in self.counts().items()) or "no rule"


class Context:
    """The layout and the known masks, ready for :meth:`apply` (built once, applied with any set of rules)."""

    def __init__(self, mosaics: Mosaics, known_ids, known_masks: np.ndarray):
        known_ids = np.asarray(known_ids, str)
        known_masks = np.asarray(known_masks, bool)
        if len(known_ids) != len(known_masks):
            raise ValueError(f"{len(known_ids)} known ids but {len(known_masks)} known masks")
        self.mosaics = mosaics
        import pandas as pd

        self.known_index = pd.Index(known_ids)
        nb = mosaics.neighbours(mosaics.ids)
        self.up, self.down, self.left, self.right = nb.up, nb.down, nb.left, nb.right
        rows = self.known_index.get_indexer(mosaics.ids)  # each board tile's row in the known masks, -1 if unknown
        self.known = rows >= 0
        self.edge_of = np.full(len(mosaics), -1, np.int64)  # each board tile's row in self.edges, -1 if unknown
        self.edge_of[self.known] = np.arange(int(self.known.sum()))
        self.edges = Edges.of(known_masks[rows[self.known]])
        self.known_tiles = np.flatnonzero(self.known)  # board index of each row of self.edges

    def next_to_known(self, ids) -> np.ndarray:
        """(N,) bool: the tiles of ``ids`` with a known tile among their four neighbours on the board (where the
        rules that read a neighbour can act)."""
        where = self.mosaics.index_of(np.asarray(ids, str))
        out = np.zeros(len(where), bool)
        b = where[where >= 0]
        nbs = np.stack([self.up[b], self.down[b], self.left[b], self.right[b]])
        out[where >= 0] = ((nbs >= 0) & self.known[np.maximum(nbs, 0)]).any(axis=0)
        return out

    # -- walks ----------------------------------------------------------------------------------------------------
    def walk_down(self, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(target, source) board indices: the unknown tiles in the cells below each source tile, down to the next
        known tile, an empty cell or the mosaic's edge (one step of the loop per row of the tallest walk)."""
        src = np.asarray(sources, np.int64)
        cur = self.down[src]
        targets, origins = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        while src.size:
            ok = cur >= 0
            ok[ok] = ~self.known[cur[ok]]
            src, cur = src[ok], cur[ok]
            targets.append(cur)
            origins.append(src)
            cur = self.down[cur]
        return np.concatenate(targets), np.concatenate(origins)

    # -- the step -----------------------------------------------------------------------------------------------
    def apply(self, masks: np.ndarray, ids, rules: Sequence[str]) -> Outcome:
        """The enabled ``rules`` (names of :data:`RULES`) on predicted ``masks`` (N, H, W) of tiles ``ids``."""
        rules = parse_rules(rules, "mosaic rules")
        masks = np.asarray(masks, bool)
        ids = np.asarray(ids, str)
        if masks.ndim != 3 or len(masks) != len(ids):
            raise ValueError(f"expected masks of shape ({len(ids)}, H, W), got {masks.shape}")
        out = masks.copy()
        fixed = self.known_index.get_indexer(ids) >= 0  # a tile whose mask is known is never changed
        where = self.mosaics.index_of(ids)
        pred = np.full(len(self.mosaics), -1, np.int64)  # each board tile's row in ``masks``, -1 if not predicted
        on_board = where >= 0
        pred[where[on_board]] = np.flatnonzero(on_board)
        taken = fixed.copy()  # tiles set by an earlier rule (or known): later rules leave them alone
        changed, touched = {}, {}
        for rule in rules:
            rows = MOSAIC_RULES.get(rule).obj(self, out, pred, taken)
            # a touched tile was not set before (taken tiles are skipped): compare with the input mask
            changed[rule], touched[rule] = np.zeros(len(ids), bool), np.zeros(len(ids), bool)
            changed[rule][rows] = (out[rows] != masks[rows]).any(axis=(1, 2))
            touched[rule][rows] = True
            taken[rows] = True
        return Outcome(out, changed, touched)

    def targets(self, board: np.ndarray, pred: np.ndarray, taken: np.ndarray, *extra) -> np.ndarray:
        """The rows in the masks of the board tiles ``board`` (-1: no tile) that are predicted and not taken, and
        the same entries of each ``extra`` array."""
        rows = np.where(board >= 0, pred[np.maximum(board, 0)], -1) if len(pred) else np.full(len(board), -1)
        ok = rows >= 0
        ok[ok] = ~taken[rows[ok]]
        return (rows[ok], *(e[ok] for e in extra))


# -- the rules, in the order they run; each registered once with its help and its colour in the pictures ----
@MOSAIC_RULES.register("vertical", colour=(0, 220, 255),
                       help="a salt wall continues down: a vertical known mask's last row repeats below it")
def vertical(ctx: Context, out: np.ndarray, pred: np.ndarray, taken: np.ndarray) -> np.ndarray:
    e, k = ctx.edges, ctx.edge_of
    below, src = ctx.walk_down(ctx.known_tiles[e.soft])
    rows, src = ctx.targets(below, pred, taken, src)
    out[rows] = e.bottom[k[src]][:, None, :]
    full = ctx.known_tiles[e.vertical]
    mark = taken.copy()
    mark[rows] = True  # a walk from above wins over the extension up
    up_rows, up_src = ctx.targets(ctx.up[full], pred, mark, full)
    out[up_rows] = e.top[k[up_src]][:, None, :]
    return np.concatenate([rows, up_rows])

@MOSAIC_RULES.register("empty-below", colour=(255, 0, 255),
                       help="below a known tile whose bottom row is all salt, the tiles become empty")
def empty_below(ctx: Context, out: np.ndarray, pred: np.ndarray, taken: np.ndarray) -> np.ndarray:
    below, _ = ctx.walk_down(ctx.known_tiles[ctx.edges.bottom_full])
    (rows,) = ctx.targets(below, pred, taken)
    out[rows] = False
    return rows

@MOSAIC_RULES.register("boundary", colour=(255, 150, 0),
                       help="an empty-predicted tile next to a known partly-salt edge continues that boundary")
def boundary(ctx: Context, out: np.ndarray, pred: np.ndarray, taken: np.ndarray) -> np.ndarray:
    board = np.flatnonzero(pred >= 0)
    (rows, board) = ctx.targets(board, pred, taken, board)
    empty = ~out[rows].any(axis=(1, 2))
    rows, board = rows[empty], board[empty]
    done = np.zeros(len(rows), bool)
    h, w = out.shape[1:]
    e, k = ctx.edges, ctx.edge_of
    # (neighbour before, its line facing us, neighbour after, its line, lines along which axis)
    for before, first, after, second, axis in ((ctx.up, e.bottom, ctx.down, e.top, "rows"),
                                               (ctx.left, e.right, ctx.right, e.left, "cols")):
        nb_a, nb_b = before[board], after[board]
        has_a = (nb_a >= 0) & ctx.known[np.maximum(nb_a, 0)] & ~done
        has_b = (nb_b >= 0) & ctx.known[np.maximum(nb_b, 0)] & ~done
        size = w if axis == "rows" else h
        line_a = np.zeros((len(rows), size), bool)
        line_b = np.zeros((len(rows), size), bool)
        line_a[has_a] = first[k[nb_a[has_a]]]
        line_b[has_b] = second[k[nb_b[has_b]]]
        fire = (has_a & partly_salt(line_a)) | (has_b & partly_salt(line_b))
        if not fire.any():
            continue
        # a side without a known neighbour: the other side's line is extruded (both ends the same line)
        a = np.where((has_a & fire)[:, None], line_a, line_b)
        b = np.where((has_b & fire)[:, None], line_b, line_a)
        steps = h if axis == "rows" else w
        filled = interpolate(a[fire], b[fire], steps)  # (F, steps, size): along rows, or along columns
        out[rows[fire]] = filled if axis == "rows" else filled.transpose(0, 2, 1)
        done |= fire
    return rows[done]

@MOSAIC_RULES.register("fill-holes", colour=(120, 120, 255), help="holes of each predicted mask are filled")
def fill_holes(ctx: Context, out: np.ndarray, pred: np.ndarray, taken: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    rows = np.flatnonzero(~taken)
    for first in range(0, len(rows), _BLOCK):  # blocks of tiles: each tile's holes on its own (no link across)
        block = rows[first:first + _BLOCK]
        out[block] = ndimage.binary_fill_holes(out[block], structure=_CROSS)
    return rows


RULES = MOSAIC_RULES.names()


def apply_rules(masks: np.ndarray, ids, mosaics: Mosaics, known_ids, known_masks: np.ndarray,
                rules: Sequence[str]) -> Outcome:
    """The mosaic rules on predicted ``masks`` (N, H, W) bool of tiles ``ids``, with the layout ``mosaics`` and the
    masks that may be used (``known_ids``, ``known_masks``): the new masks and, per rule, the tiles it changed."""
    return Context(mosaics, known_ids, known_masks).apply(masks, ids, rules)


# -- the out-of-fold search of the rules ----------------------------------------------------------------------------
@dataclass
class RuleSearch:
    """Every subset of the rules scored image by image on out-of-fold masks, each fold's tiles unknown.

    ``scores[s, i]`` is image i's score with the rules ``subsets[s]`` (the empty subset first), ``groups[i]`` its
    fold; ``sums`` the per-fold totals; ``alone`` the tiles each rule changes and its score change when it runs
    alone; ``best`` the subset chosen on all folds, ``folds`` (name, images, subset chosen on the other folds, its
    gain on this fold) the nested estimate, ``verdict`` the credibility of its held-out gain
    (:func:`tgs.credibility.judge` on the per-image differences) and ``kept`` the rules to use: ``best`` when that
    gain is credible, else none."""

    rules: tuple
    subsets: list
    scores: np.ndarray  # (S, N) image scores per subset
    groups: np.ndarray  # (N,) each image's fold, 0..K-1
    empty: np.ndarray  # (S, K) empty masks
    names: list  # (K,) fold names
    alone: dict  # rule -> (tiles changed, mean score change)
    # the same search on masks made fold by fold with the setting chosen without that fold's truth: when given (set
    # it before reading ``verdict``), the held-out figures (``folds``, ``held_out_gain``, ``verdict``, ``kept``,
    # :meth:`for_fold`) come from it
    nested: "RuleSearch | None" = None

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.groups, minlength=len(self.names))

    @property
    def sums(self) -> np.ndarray:
        """(S, K) the summed image scores of each subset over each fold."""
        onehot = self.groups[:, None] == np.arange(len(self.names))[None, :]
        return self.scores @ onehot

    def _pick(self, groups, candidates=None) -> int:
        """The best subset on the folds ``groups`` ((K,) bool), among the subset indices ``candidates`` (all)."""
        total = self.sums[:, groups].sum(axis=1)
        if candidates is not None:
            total = np.where(np.isin(np.arange(len(total)), candidates), total, -np.inf)
        return int(np.flatnonzero(total >= total.max() - 1e-9)[0])  # the fewest rules among the equally good

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def best(self) -> tuple:
        return self.subsets[self._pick(np.ones(len(self.counts), bool))]

    @property
    def in_sample_gain(self) -> float:
        total = self.sums.sum(axis=1)
        return float((total[self.subsets.index(self.best)] - total[0]) / self.count)

    def _held_out(self, among: np.ndarray, candidates=None) -> tuple[list, np.ndarray, np.ndarray]:
        """For each fold j of ``among`` ((K,) bool) that holds images, the subset chosen on the other folds of
        ``among`` (among ``candidates``): [(j, subset index)], with the per-image score differences (that subset
        minus no rule) of those folds' images and their folds."""
        every = np.arange(len(self.counts))
        chosen = [(j, self._pick(among & (every != j), candidates)) for j in np.flatnonzero(among)
                  if (among & (every != j)).any() and self.counts[j]]
        sel = [np.flatnonzero(self.groups == j) for j, _ in chosen]
        diffs = [self.scores[s, rows] - self.scores[0, rows] for (_, s), rows in zip(chosen, sel)]
        return (chosen, np.concatenate(diffs) if diffs else np.zeros(0),
                np.concatenate([self.groups[rows] for rows in sel]) if sel else np.zeros(0, np.int64))

    @property
    def folds(self) -> list:
        if self.nested is not None:
            return self.nested.folds
        chosen, _, _ = self._held_out(np.ones(len(self.counts), bool))
        sums = self.sums
        return [(self.names[k], int(self.counts[k]), self.subsets[s], float((sums[s, k] - sums[0, k]) / self.counts[k]))
                for k, s in chosen]

    @property
    def held_out_gain(self) -> float:
        folds = self.folds
        if len(folds) < 2:
            return float("nan")
        return sum(gain * n for _, n, _, gain in folds) / self.count

    @cached_property
    def verdict(self):
        """The credibility of the held-out gain (:func:`tgs.credibility.judge`), from the nested masks' search
        when given."""
        from tgs.credibility import judge

        src = self.nested if self.nested is not None else self
        _, diffs, groups = src._held_out(np.ones(len(src.counts), bool))
        return judge(diffs, groups)

    def _rule_verdict(self, rule: str, among: np.ndarray):
        """The credibility of ``rule`` alone (on or off, chosen on the other folds of ``among``)."""
        from tgs.credibility import judge

        _, diffs, groups = self._held_out(among, [0, self.subsets.index((rule,))])
        return judge(diffs, groups)

    @cached_property
    def rule_verdicts(self) -> dict:
        """rule -> the credibility of its own nested held-out gain (the rule alone, from the nested masks' search
        when given): a rule is kept only when its own gain is credible, not merely the set's."""
        src = self.nested if self.nested is not None else self
        return {r: src._rule_verdict(r, np.ones(len(src.counts), bool)) for r in self.rules}

    @property
    def kept(self) -> tuple:
        """The best subset's rules whose own held-out gain is credible, when the subset's is; else none."""
        return tuple(r for r in self.best if self.rule_verdicts[r].credible) if self.verdict.credible else ()

    @property
    def kept_held_out_gain(self) -> float:
        """The nested held-out gain of the kept rules (each fold with the best subset of them on the other folds):
        the set's held-out gain when nothing is filtered out, 0 when no rule is kept."""
        src = self.nested if self.nested is not None else self
        kept = set(self.kept)
        candidates = [s for s, subset in enumerate(src.subsets) if set(subset) <= kept]
        _, diffs, _ = src._held_out(np.ones(len(src.counts), bool), candidates)
        return float(diffs.mean()) if diffs.size else float("nan")

    def for_fold(self, k: int) -> tuple:
        """The rules that fold k's own predictions may use (its pseudo-labels, ``--pseudo-source fold``), decided
        without fold k's truth: the best subset on the other folds, kept when its nested held-out gain among those
        folds is credible (:func:`tgs.credibility.judge`); none with fewer than two other folds."""
        from tgs.credibility import judge

        src = self.nested if self.nested is not None else self
        rest = np.arange(len(src.counts)) != k
        if rest.sum() < 2:
            return ()
        _, diffs, groups = src._held_out(rest)
        if not judge(diffs, groups).credible:
            return ()
        return tuple(r for r in src.subsets[src._pick(rest)] if src._rule_verdict(r, rest).credible)

    def empty_share(self, subset: tuple) -> float:
        """The share of empty masks with the rules ``subset``."""
        return float(self.empty[self.subsets.index(subset)].sum() / self.count)

    def lines(self) -> list[str]:
        named = lambda s: ", ".join(s) or "none"  # noqa: E731
        out = [f"  {'rule':<12s} {'tiles changed':>13s}  score change (the rule alone)"]
        out += [f"  {r:<12s} {n:13d}  {d:+.6f}" for r, (n, d) in self.alone.items()]
        out.append(f"best rules: {named(self.best)}: in-sample gain {self.in_sample_gain:+.6f}, held-out gain "
                   f"{self.held_out_gain:+.6f} (nested: each fold with the best rules of the other folds)")
        out += [f"  {name:<10s} {n:5d} images  gain {gain:+.6f}  chosen on the rest: {named(s)}"
                for name, n, s, gain in self.folds]
        if self.verdict.credible:
            out += [f"  {r:<12s} alone, held out: {v.why}" for r, v in self.rule_verdicts.items() if r in self.best]
        if self.kept:
            out.append(f"kept: {named(self.kept)} (their held-out gain is {self.verdict.why}; each rule's own is "
                       f"credible); empty masks {self.empty_share(()):.1%} without the rules, "
                       f"{self.empty_share(self.kept):.1%} with them")
        else:
            why = ("no rule raises the score" if not self.best else f"their held-out gain is {self.verdict.why}"
                   if not self.verdict.credible else "the set's held-out gain is credible, no rule's own is")
            out.append(f"kept: none ({why})")
        return out


def search_rules(masks: np.ndarray, truth: np.ndarray, ids, groups: np.ndarray, contexts: Sequence[Context],
                 names: Sequence[str] = (), rules: Sequence[str] = RULES) -> RuleSearch:
    """Score every subset of ``rules`` on out-of-fold ``masks`` (N, H, W) of tiles ``ids`` against ``truth``: the
    tiles of fold k (``groups == k``) with ``contexts[k]`` (the layout and the masks known while fold k is
    predicted: the other folds', never fold k's own).

    Each rule runs once per fold, alone: what it sets a tile to does not depend on the other rules (they only take
    tiles away from it, in the order of :data:`RULES`), so a subset's image scores are, tile by tile, those of the
    first of its rules that sets the tile, else the input's (:meth:`Context.apply` of the subset gives the same)."""
    from itertools import combinations

    from tgs import metric

    rules = parse_rules(rules, "mosaic rules")
    masks, truth, ids = np.asarray(masks, bool), np.asarray(truth, bool), np.asarray(ids, str)
    groups = np.asarray(groups, np.int64)
    k_groups = len(contexts)
    subsets = [s for size in range(len(rules) + 1) for s in combinations(rules, size)]
    scores, empty = np.zeros((len(subsets), len(ids))), np.zeros((len(subsets), k_groups), np.int64)
    changed = dict.fromkeys(rules, 0)
    for k, ctx in enumerate(contexts):  # a loop per fold, then per rule and per subset
        sel = np.flatnonzero(groups == k)
        base = metric.image_scores(masks[sel], truth[sel]) if sel.size else np.zeros(0)
        base_empty = ~masks[sel].any(axis=(1, 2))
        alone = {}
        for rule in rules:
            outcome = ctx.apply(masks[sel], ids[sel], (rule,))
            hit = outcome.touched[rule]
            score = base.copy()
            if hit.any():
                score[hit] = metric.image_scores(outcome.masks[hit], truth[sel][hit])
            alone[rule] = (hit, score, ~outcome.masks.any(axis=(1, 2)))
            changed[rule] += int(outcome.changed[rule].sum())
        for s, subset in enumerate(subsets):
            score, is_empty, free = base.copy(), base_empty.copy(), np.ones(len(sel), bool)
            for rule in subset:
                hit, rule_score, rule_empty = alone[rule]
                score[hit & free], is_empty[hit & free] = rule_score[hit & free], rule_empty[hit & free]
                free &= ~hit
            scores[s, sel], empty[s, k] = score, is_empty.sum()
    total = scores.sum(axis=1)
    effect = {r: (changed[r], float((total[subsets.index((r,))] - total[0]) / len(ids))) for r in rules}
    names = list(names) if len(names) == k_groups else [f"group {k}" for k in range(k_groups)]
    return RuleSearch(rules, subsets, scores, groups, empty, names, effect)
