"""Train/validation splits.

The 9th-place split names folds ``fold0`` .. ``fold9``: the rows of train.csv, in file order, cut into 10 equal
consecutive chunks; fold k validates on chunk k and trains on the other nine (on the real 4000 images: rows
400k .. 400k+399). A name with several digits validates on several chunks: ``fold01`` is chunks 0 and 1
(rows 0..799). Chunk k of N rows is rows ``k*N//10 .. (k+1)*N//10 - 1``, so any dataset size works.

A folds file (CSV ``id,fold``, e.g. from :func:`stratified_folds`) replaces the chunks: ``foldK`` then validates
on the ids whose fold is K.

    python -m datasets.folds --data-dir DATA --k 5 --seed 0 --out folds.csv
    python -m datasets.folds --data-dir DATA --k 10 --seed 0 --out folds.csv --mosaics DIR/mosaics.csv

With ``--mosaics`` (from mosaic.py) the split keeps every train tile of one mosaic in one fold
(:func:`mosaic_folds`), so no validation tile has a training neighbour across an edge, and it prints how many
train-train neighbour pairs each kind of split (the consecutive chunks, stratified, mosaic) puts across folds.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse import csgraph

from tgs.errors import DataError, UserError, cli, excerpt
from tgs.io import atomic_open, require_file
from tgs.mosaic import Mosaics

CHUNKS = 10
_NAME = re.compile(r"^fold(\d+)$")


def fold_problem(name: str) -> str | None:
    """What is wrong with a fold name (``fold3``: chunk 3; ``fold01``: chunks 0 and 1), as text after the name, or
    None: the one check of a fold name, for a flag, a list of them or a config file's key."""
    m = _NAME.match(name or "")
    if not m:
        return "is not a fold name: use fold0 .. fold9, or several digits such as fold01 to validate on several folds"
    if len(set(m.group(1))) != len(m.group(1)):
        return "repeats a fold"
    return None


def parse_fold(name: str) -> list[int]:
    """``fold3`` -> [3]; ``fold01`` -> [0, 1]. Each digit is one fold (chunk) index."""
    problem = fold_problem(name)
    if problem:
        raise UserError(f"--data-fold {name!r} {problem}")
    return [int(c) for c in name[len("fold"):]]


def fold_names(text: str) -> tuple[str, ...]:
    """A comma-separated list of fold names (``fold0,fold1``), each valid, none twice, and no two validating on the
    same chunk (fold01 and fold1 overlap): each image is out of fold once. A problem is a UserError whose text
    names the folds (the caller adds its flag)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UserError("expected fold names such as fold0,fold1")
    seen: dict[int, str] = {}
    for name in names:
        problem = fold_problem(name)
        if problem:
            raise UserError(f"{name!r} {problem}")
        if names.count(name) > 1:
            raise UserError(f"{text!r} names a fold twice ({name})")
        for chunk in parse_fold(name):
            if chunk in seen:
                raise UserError(f"{seen[chunk]} and {name} overlap: both validate on fold {chunk} (each image must be "
                                "out of fold once)")
            seen[chunk] = name
    return names


def chunk_of_rows(n: int, chunks: int = CHUNKS) -> np.ndarray:
    """The chunk index of each of ``n`` rows in file order."""
    bounds = (np.arange(chunks + 1) * n) // chunks
    return np.searchsorted(bounds, np.arange(n), side="right") - 1


def split(ids: np.ndarray, fold: str, folds_file: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid) of ``ids`` (train.csv order) for a fold name."""
    wanted = parse_fold(fold)
    if folds_file is None:
        assignment = chunk_of_rows(len(ids))
        available = CHUNKS
    else:
        assignment = read_folds_file(folds_file, ids)
        available = int(assignment.max()) + 1 if assignment.size else 0
    bad = [k for k in wanted if k >= available]
    if bad:
        src = f"folds file {folds_file}" if folds_file else "the 10-chunk split"
        raise UserError(f"--data-fold {fold}: fold {bad[0]} does not exist in {src} (folds 0..{available - 1})")
    valid = np.isin(assignment, wanted)
    return np.flatnonzero(~valid), np.flatnonzero(valid)


def require_folds_file(path: str | Path) -> Path:
    """``path`` when it is a file; else one line naming it (a folder, or missing: how to make one)."""
    return require_file(path, "--folds-file ", "CSV file",
                        "does not exist (make one with `python -m datasets.folds`)")


def digest(folds_file: str | Path | None) -> str | None:
    """The sha256 of a folds file's contents (None: the consecutive chunks): what a run records of the folds it
    trained on, so that a file rewritten under the same name is noticed."""
    from tgs.pseudo import digest as file_digest

    return None if folds_file is None else file_digest(require_folds_file(folds_file))


def read_folds_file(path: str | Path, ids: np.ndarray) -> np.ndarray:
    """Fold number of every id in ``ids`` from a CSV ``id,fold``; every id must be there."""
    path = require_folds_file(path)
    df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    if list(df.columns) != ["id", "fold"]:
        raise DataError(f"{path}: header is {','.join(map(str, df.columns))!r}, expected 'id,fold'")
    folds = pd.to_numeric(df["fold"], errors="coerce")
    if folds.isna().any() or (folds < 0).any() or (folds != folds.round()).any():
        row = int(np.argmax((folds.isna() | (folds < 0) | (folds != folds.round())).to_numpy()))
        raise DataError(f"{path}: id {df['id'].iloc[row]} has fold {excerpt(str(df['fold'].iloc[row]))}, expected "
                        "0, 1, 2, ...")
    table = pd.Series(folds.astype(np.int64).to_numpy(), index=df["id"].to_numpy(str))
    if table.index.duplicated().any():
        raise DataError(f"{path}: id {table.index[table.index.duplicated()][0]} appears twice")
    found = table.reindex(ids)
    if found.isna().any():
        missing = np.asarray(ids)[found.isna().to_numpy()]
        raise DataError(f"{path}: {len(missing)} ids of train.csv have no fold, first {missing[0]}")
    return found.to_numpy(np.int64)


def coverage_class(masks: np.ndarray, bins: int = 10) -> np.ndarray:
    """0 for an empty mask, else 1 + floor(coverage * bins) clipped to ``bins``: (N,) int."""
    cov = masks.reshape(len(masks), -1).mean(axis=1)
    return np.where(cov == 0, 0, 1 + np.minimum((cov * bins).astype(np.int64), bins - 1))


def depth_classes(depths: np.ndarray, depth_bins: int = 4) -> np.ndarray:
    """Depth quantile (0 .. depth_bins - 1) of each row; unknown depths count as the median."""
    d = np.asarray(depths, dtype=np.float64)
    d = np.nan_to_num(d, nan=np.nanmedian(d) if np.isfinite(d).any() else 0)
    edges = np.quantile(d, np.linspace(0, 1, depth_bins + 1)[1:-1]) if len(d) else []
    return np.searchsorted(edges, d, side="right")


def stratified_folds(coverage: np.ndarray, depths: np.ndarray, k: int, seed: int = 0,
                     depth_bins: int = 4) -> np.ndarray:
    """Fold number per row, balanced over (coverage class, depth quantile) strata.

    Rows are shuffled (seeded), ordered by stratum, and dealt out to the folds in turn, so every stratum is spread
    over the folds as evenly as possible and the fold sizes differ by at most one.
    """
    n = len(coverage)
    if k < 2 or k > n:
        raise UserError(f"--k {k}: need 2 <= k <= {n} (the number of images)")
    stratum = np.asarray(coverage) * (depth_bins + 1) + depth_classes(depths, depth_bins)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), stratum))
    folds = np.empty(n, dtype=np.int64)
    folds[order] = (np.arange(n) + rng.integers(k)) % k
    return folds


def write_folds(path: str | Path, ids: np.ndarray, folds: np.ndarray) -> None:
    with atomic_open(path, "w", newline="") as fh:
        pd.DataFrame({"id": ids, "fold": folds}).to_csv(fh, index=False)


def training_rows(ids: np.ndarray, masks: np.ndarray, fold: str, folds_file: str | Path | None = None,
                  drop_mask_threshold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The split train.py trains and validates on: row indices (train, valid) of ``fold``, the training rows
    without masks of 1..N-1 salt pixels when ``drop_mask_threshold`` is N (tiny, doubtful labels). Both must be
    non-empty. swa.py recomputes BatchNorm on the same training rows."""
    tr, va = split(ids, fold, folds_file)
    if drop_mask_threshold > 0:
        area = masks[tr].reshape(len(tr), -1).sum(axis=1)
        tr = tr[(area == 0) | (area >= drop_mask_threshold)]
    if len(tr) == 0 or len(va) == 0:
        raise UserError(f"--data-fold {fold}: {len(tr)} training and {len(va)} validation images; "
                        "both must be non-empty")
    return tr, va


def mosaic_groups(ids: np.ndarray, mosaics: Mosaics) -> np.ndarray:
    """The mosaic of each id (train.csv order), -1 for ids in no mosaic."""
    where = mosaics.index_of(ids)
    if len(mosaics) == 0:  # a header-only file (no pair found): every tile is alone
        return np.full(len(where), -1, np.int64)
    return np.where(where >= 0, mosaics.mosaic[np.maximum(where, 0)], -1)


LIKELY_RATIO = 0.9  # mosaic folds also keep together mutual best matches up to this best/second-best ratio


def neighbour_groups(ids: np.ndarray, mosaics: Mosaics, images: np.ndarray) -> np.ndarray:
    """The group of each id (train.csv order) for mosaic folds, -1 for a tile alone: its mosaic, joined with the
    tiles among ``images`` (the same ids' images) that are likely neighbours (datasets.mosaic.likely_pairs, up to
    LIKELY_RATIO). The mosaics hold only sure pairs; for folds a wrong link costs a little balance while a missed
    one puts a neighbour of a validation tile into training, so the folds take the looser links as well (the
    share of true train-train pairs they split on synthetic sections is in docs/mosaics.md)."""
    from datasets import mosaic

    groups = mosaic_groups(ids, mosaics)
    n = len(groups)
    member = np.flatnonzero(groups >= 0)
    _, first, which = np.unique(groups[member], return_index=True, return_inverse=True)
    head = np.arange(n)
    head[member] = member[first][which]  # each mosaic's first tile
    a, b = mosaic.likely_pairs(images, LIKELY_RATIO)
    graph = sparse.coo_matrix((np.ones(n + len(a)), (np.r_[np.arange(n), a], np.r_[head, b])), shape=(n, n))
    _, component = csgraph.connected_components(graph, directed=False)
    alone = np.bincount(component, minlength=n)[component] == 1
    return np.where(alone, -1, component)


def neighbour_folds(train, mosaics: Mosaics, k: int, seed: int = 0) -> np.ndarray:
    """Mosaic folds of a train set (``ids``, ``images``, ``masks``, ``depths``): every mosaic's train tiles and
    their likely neighbours (:func:`neighbour_groups`) in one fold, balanced by coverage class and depth
    (:func:`mosaic_folds`)."""
    groups = neighbour_groups(train.ids, mosaics, train.images)
    return mosaic_folds(coverage_class(train.masks), train.depths, groups, k, seed)


def water_fill(counts: np.ndarray, m: int, sizes: np.ndarray) -> np.ndarray:
    """How many of ``m`` new items each fold gets so that ``counts`` end as level as possible (ties: the folds of
    smallest ``sizes`` get the spare ones)."""
    lo, hi = int(counts.min()), int(counts.max()) + m + 1
    while hi - lo > 1:  # the highest level L that m items can fill up to
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if np.maximum(0, mid - counts).sum() <= m else (lo, mid)
    quota = np.maximum(0, lo - counts)
    spare = m - int(quota.sum())
    at_level = np.flatnonzero(counts + quota == lo)
    quota[at_level[np.argsort(sizes[at_level], kind="stable")[:spare]]] += 1
    return quota


def mosaic_folds(coverage: np.ndarray, depths: np.ndarray, groups: np.ndarray, k: int, seed: int = 0,
                 depth_bins: int = 4) -> np.ndarray:
    """Fold number per row, with every row of one mosaic (``groups`` >= 0) in the same fold.

    Whole mosaics go first, largest first, each to the fold where it adds least to the sums of squared fold sizes
    and per-class counts (relative to their targets): a greedy balance of size and coverage class. The rows in no
    mosaic then level each coverage class over the folds (water-filling), dealt in depth order so that each fold
    gets a spread of depths, as :func:`stratified_folds` does.
    """
    coverage = np.asarray(coverage, np.int64)
    groups = np.asarray(groups, np.int64)
    n = len(coverage)
    if k < 2 or k > n:
        raise UserError(f"--k {k}: need 2 <= k <= {n} (the number of images)")
    rng = np.random.default_rng(seed)
    n_class = int(coverage.max(initial=0)) + 1
    class_weight = k / np.maximum(np.bincount(coverage, minlength=n_class), 1)  # 1 / per-fold target
    size_weight = k / n
    folds = np.full(n, -1, np.int64)
    count = np.zeros((k, n_class), np.int64)
    size = np.zeros(k, np.int64)
    in_mosaic = np.flatnonzero(groups >= 0)
    labels, member = np.unique(groups[in_mosaic], return_inverse=True)
    group_class = np.zeros((len(labels), n_class), np.int64)
    np.add.at(group_class, (member, coverage[in_mosaic]), 1)
    group_size = group_class.sum(axis=1)
    chosen = np.empty(len(labels), np.int64)
    for g in np.lexsort((rng.random(len(labels)), -group_size)):  # a loop per mosaic, largest first
        v = group_class[g]
        cost = ((count + v) ** 2 - count ** 2) @ class_weight + ((size + group_size[g]) ** 2 - size ** 2) * size_weight
        f = int(np.argmin(cost))
        chosen[g] = f
        count[f] += v
        size[f] += group_size[g]
    folds[in_mosaic] = chosen[member]

    depth_class = depth_classes(depths, depth_bins)
    alone = groups < 0
    for c in range(n_class):  # a loop per coverage class
        rows = np.flatnonzero(alone & (coverage == c))
        if not rows.size:
            continue
        rows = rows[np.lexsort((rng.random(rows.size), depth_class[rows]))]
        quota = water_fill(count[:, c], rows.size, size)
        slot_fold = np.repeat(np.arange(k), quota)
        slot_rank = np.concatenate([(np.arange(q) + 0.5) / q for q in quota if q])  # spread each fold over depths
        folds[rows] = slot_fold[np.lexsort((rng.random(slot_fold.size), slot_rank))]
        count[:, c] += quota
        size += quota
    return folds


def crossing_pairs(ids: np.ndarray, folds: np.ndarray, mosaics: Mosaics) -> tuple[int, int]:
    """Train-train neighbour pairs (adjacent in ``mosaics``, both in ``ids``) whose tiles are in different folds,
    i.e. that cross between training and validation in some fold's split: (crossing, all such pairs)."""
    a, b, _ = mosaics.adjacent()
    where = pd.Index(np.asarray(ids, str))
    ia, ib = where.get_indexer(mosaics.ids[a]), where.get_indexer(mosaics.ids[b])
    both = (ia >= 0) & (ib >= 0)
    folds = np.asarray(folds)
    return int((folds[ia[both]] != folds[ib[both]]).sum()), int(both.sum())


def build_parser():
    """The parser of ``python -m datasets.folds`` (its shared flags from their declarations, tgs/options.py)."""
    from tgs.cliargs import ArgumentParser, add_declared, add_mosaics, integer
    from tgs.options import DATA_DIR, SEED

    p = ArgumentParser(description="Write a stratified k-fold split (by coverage class and depth).")
    add_declared(p, "--data-dir", DATA_DIR, required=True)
    p.add_argument("--k", type=integer(2, CHUNKS), default=10,
                   help=f"folds, 2..{CHUNKS} (named fold0..fold{CHUNKS - 1}; train.py reads fold01 as folds 0 and 1)")
    add_declared(p, "--seed", SEED, 0, "the same seed, the same folds")
    p.add_argument("--out", required=True, help="CSV to write: id,fold")
    add_mosaics(p, "every train tile of one mosaic goes to one fold, and the train-train neighbour pairs crossing "
                   "each kind of split are reported")
    return p


@cli
def main(argv=None) -> int:
    from datasets import kaggle

    args = build_parser().parse_args(argv)
    from tgs.io import check_output

    check_output(args.out, "--out", {"--mosaics": args.mosaics}, [args.data_dir])
    train = kaggle.load_train(args.data_dir)
    coverage = coverage_class(train.masks)
    stratified = stratified_folds(coverage, train.depths, args.k, args.seed)
    folds = stratified
    if args.mosaics:
        layout = kaggle.Layout.of(args.data_dir)
        test_ids = kaggle.read_sample_submission(layout.sample_submission) if layout.sample_submission.is_file() \
            else np.array([], str)
        mosaics = Mosaics.read(args.mosaics, known_ids=np.concatenate([train.ids, test_ids]))
        folds = neighbour_folds(train, mosaics, args.k, args.seed)
    write_folds(args.out, train.ids, folds)
    sizes = np.bincount(folds, minlength=args.k)
    print(f"wrote {args.out}: {len(train)} ids in {args.k} folds of {sizes.min()}..{sizes.max()} images")
    if args.mosaics:
        spread = max(int(np.ptp(np.bincount(folds[coverage == c], minlength=args.k))) for c in np.unique(coverage))
        print("each mosaic's train tiles and likely neighbours in one fold; per coverage class, fold counts differ by "
              f"at most {spread}")
        print(f"{'split':34s} {'train-train neighbour pairs across folds':>42s}")
        for name, f in ((f"{CHUNKS} consecutive chunks (fold0..fold9)", chunk_of_rows(len(train))),
                        (f"stratified (k={args.k}, seed={args.seed})", stratified),
                        (f"mosaic (k={args.k}, seed={args.seed})", folds)):
            crossing, total = crossing_pairs(train.ids, f, mosaics)
            print(f"{name:34s} {crossing:>34d} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
