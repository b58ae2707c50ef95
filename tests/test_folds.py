"""Fold splits: the 9th place's consecutive chunks, and the stratified generator."""
import numpy as np
import pandas as pd
import pytest

from datasets import folds
from tgs.errors import UserError

IDS = np.array([f"{i:010x}" for i in range(4000)])


@pytest.mark.parametrize("k", range(10))
def test_recipe_folds_on_4000(k):
    train, valid = folds.split(IDS, f"fold{k}")
    assert np.array_equal(valid, np.arange(400 * k, 400 * k + 400))
    assert len(train) == 3600 and np.intersect1d(train, valid).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, valid])), np.arange(4000))


def test_two_chunk_fold():
    train, valid = folds.split(IDS, "fold01")
    assert np.array_equal(valid, np.arange(800)) and np.array_equal(train, np.arange(800, 4000))


def test_any_size():
    ids = IDS[:37]
    sizes = [len(folds.split(ids, f"fold{k}")[1]) for k in range(10)]
    assert sum(sizes) == 37 and set(sizes) <= {3, 4}
    seen = np.concatenate([folds.split(ids, f"fold{k}")[1] for k in range(10)])
    assert np.array_equal(seen, np.arange(37))  # consecutive chunks in file order


@pytest.mark.parametrize("bad", ["fold", "foldA", "3", "fold00", ""])
def test_bad_fold_names(bad):
    with pytest.raises(UserError, match="--data-fold"):
        folds.split(IDS, bad)


def test_stratified_balance_and_seed():
    rng = np.random.default_rng(0)
    cov = rng.integers(0, 11, 1000)
    depth = rng.uniform(50, 950, 1000)
    f = folds.stratified_folds(cov, depth, k=5, seed=1)
    assert np.bincount(f).max() - np.bincount(f).min() <= 1
    # each coverage class is spread over the folds as evenly as possible (strata are finer, so within 1-2)
    for c in range(11):
        counts = np.bincount(f[cov == c], minlength=5)
        assert counts.max() - counts.min() <= 2, (c, counts)
    assert np.array_equal(f, folds.stratified_folds(cov, depth, k=5, seed=1))
    assert not np.array_equal(f, folds.stratified_folds(cov, depth, k=5, seed=2))


def test_coverage_class():
    m = np.zeros((3, 10, 10), bool)
    m[1, :1, :5] = True  # 5%
    m[2] = True
    assert list(folds.coverage_class(m)) == [0, 1, 10]


def test_folds_file_round_trip(tmp_path):
    ids = IDS[:50]
    f = folds.stratified_folds(np.zeros(50, int), np.arange(50.0), k=5, seed=0)
    path = tmp_path / "folds.csv"
    folds.write_folds(path, ids, f)
    assert pd.read_csv(path).columns.tolist() == ["id", "fold"]
    train, valid = folds.split(ids, "fold2", folds_file=path)
    assert np.array_equal(valid, np.flatnonzero(f == 2))
    with pytest.raises(UserError, match="fold 7 does not exist"):
        folds.split(ids, "fold7", folds_file=path)
    with pytest.raises(UserError, match="ids of train.csv have no fold"):
        folds.split(IDS[:60], "fold0", folds_file=path)


def test_folds_cli(synthetic_root, tmp_path):
    out = tmp_path / "f.csv"
    assert folds.main(["--data-dir", str(synthetic_root), "--k", "4", "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype={"id": str})
    assert len(df) == 120 and set(df["fold"]) == {0, 1, 2, 3}
