"""Train/validation splits.

The 9th-place split names folds ``fold0`` .. ``fold9``: the rows of train.csv, in file order, cut into 10 equal
consecutive chunks; fold k validates on chunk k and trains on the other nine (on the real 4000 images: rows
400k .. 400k+399). A name with several digits validates on several chunks: ``fold01`` is chunks 0 and 1
(rows 0..799). Chunk k of N rows is rows ``k*N//10 .. (k+1)*N//10 - 1``, so any dataset size works.

A folds file (CSV ``id,fold``, e.g. from :func:`stratified_folds`) replaces the chunks: ``foldK`` then validates
on the ids whose fold is K.

    python -m datasets.folds --data-dir DATA --k 5 --seed 0 --out folds.csv
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tgs.errors import DataError, UserError, cli
from tgs.io import atomic_open

CHUNKS = 10
_NAME = re.compile(r"^fold(\d+)$")


def parse_fold(name: str) -> list[int]:
    """``fold3`` -> [3]; ``fold01`` -> [0, 1]. Each digit is one fold (chunk) index."""
    m = _NAME.match(name or "")
    if not m:
        raise UserError(f"--data-fold {name!r} is not a fold name: use fold0 .. fold9, or several digits such as "
                        "fold01 to validate on several folds")
    digits = [int(c) for c in m.group(1)]
    if len(set(digits)) != len(digits):
        raise UserError(f"--data-fold {name!r} repeats a fold")
    return digits


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


def read_folds_file(path: str | Path, ids: np.ndarray) -> np.ndarray:
    """Fold number of every id in ``ids`` from a CSV ``id,fold``; every id must be there."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--folds-file {path} does not exist (make one with `python -m datasets.folds`)")
    df = pd.read_csv(path, dtype={"id": str}, keep_default_na=False)
    if list(df.columns) != ["id", "fold"]:
        raise DataError(f"{path}: header is {','.join(map(str, df.columns))!r}, expected 'id,fold'")
    folds = pd.to_numeric(df["fold"], errors="coerce")
    if folds.isna().any() or (folds < 0).any() or (folds != folds.round()).any():
        row = int(np.argmax((folds.isna() | (folds < 0) | (folds != folds.round())).to_numpy()))
        raise DataError(f"{path}: id {df['id'].iloc[row]} has fold {df['fold'].iloc[row]!r}, expected 0, 1, 2, ...")
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


def stratified_folds(coverage: np.ndarray, depths: np.ndarray, k: int, seed: int = 0,
                     depth_bins: int = 4) -> np.ndarray:
    """Fold number per row, balanced over (coverage class, depth quantile) strata.

    Rows are shuffled (seeded), ordered by stratum, and dealt out to the folds in turn, so every stratum is spread
    over the folds as evenly as possible and the fold sizes differ by at most one.
    """
    n = len(coverage)
    if k < 2 or k > n:
        raise UserError(f"--k {k}: need 2 <= k <= {n} (the number of images)")
    d = np.nan_to_num(np.asarray(depths, dtype=np.float64), nan=np.nanmedian(depths) if np.isfinite(depths).any() else 0)
    edges = np.quantile(d, np.linspace(0, 1, depth_bins + 1)[1:-1]) if n else []
    depth_class = np.searchsorted(edges, d, side="right")
    stratum = np.asarray(coverage) * (depth_bins + 1) + depth_class
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), stratum))
    folds = np.empty(n, dtype=np.int64)
    folds[order] = (np.arange(n) + rng.integers(k)) % k
    return folds


def write_folds(path: str | Path, ids: np.ndarray, folds: np.ndarray) -> None:
    with atomic_open(path, "w", newline="") as fh:
        pd.DataFrame({"id": ids, "fold": folds}).to_csv(fh, index=False)


@cli
def main(argv=None) -> int:
    from datasets import kaggle

    p = argparse.ArgumentParser(description="Write a stratified k-fold split (by coverage class and depth).")
    p.add_argument("--data-dir", required=True, help="dataset in Kaggle's layout")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV to write: id,fold")
    args = p.parse_args(argv)
    train = kaggle.load_train(args.data_dir)
    folds = stratified_folds(coverage_class(train.masks), train.depths, args.k, args.seed)
    write_folds(args.out, train.ids, folds)
    sizes = np.bincount(folds, minlength=args.k)
    print(f"wrote {args.out}: {len(train)} ids in {args.k} folds of {sizes.min()}..{sizes.max()} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())


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
