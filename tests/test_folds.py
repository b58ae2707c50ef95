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


def test_a_list_of_fold_names():
    assert folds.fold_names(" fold0, fold1 ,fold23,") == ("fold0", "fold1", "fold23")


@pytest.mark.parametrize("text, message", [
    ("", "expected fold names such as fold0,fold1"),
    (" , ", "expected fold names such as fold0,fold1"),
    ("fold0,foldx", "'foldx' is not a fold name: use fold0 .. fold9"),
    ("fold11", "'fold11' repeats a fold"),
    ("fold1,fold1", "'fold1,fold1' names a fold twice (fold1)"),
    ("fold01,fold1", "fold01 and fold1 overlap: both validate on fold 1 (each image must be out of fold once)"),
    ("fold2,fold320", "fold2 and fold320 overlap: both validate on fold 2"),
])
def test_a_bad_list_of_fold_names_says_what_is_wrong(text, message):
    with pytest.raises(UserError) as exc:
        folds.fold_names(text)
    assert str(exc.value).startswith(message), exc.value


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


def random_groups(rng, n, sizes):
    """Group labels (-1 = in no mosaic) for n rows: one group per size, at random rows."""
    groups = np.full(n, -1)
    rows = rng.permutation(n)
    start = 0
    for g, size in enumerate(sizes):
        groups[rows[start:start + size]] = g
        start += size
    return groups


def test_mosaic_folds_keep_mosaics_whole_and_balanced():
    rng = np.random.default_rng(0)
    n, k = 1200, 5
    cov = rng.integers(0, 11, n)
    depth = rng.uniform(50, 950, n)
    sizes = rng.integers(2, 30, 30)
    groups = random_groups(rng, n, sizes)
    f = folds.mosaic_folds(cov, depth, groups, k=k, seed=1)
    assert set(f) == set(range(k))
    for g in range(len(sizes)):
        assert len(set(f[groups == g])) == 1  # no mosaic split across folds
    counts = np.bincount(f, minlength=k)
    assert counts.max() - counts.min() <= 2, counts
    for c in range(11):  # each coverage class levelled by the rows in no mosaic
        per_fold = np.bincount(f[cov == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 2, (c, per_fold)
    assert np.array_equal(f, folds.mosaic_folds(cov, depth, groups, k=k, seed=1))
    assert not np.array_equal(f, folds.mosaic_folds(cov, depth, groups, k=k, seed=2))


def test_mosaic_folds_with_big_mosaics_stay_within_one_mosaic_of_even():
    rng = np.random.default_rng(1)
    n, k = 400, 4
    cov = rng.integers(0, 11, n)
    sizes = [60, 40, 35, 20, 10]
    groups = random_groups(rng, n, sizes)
    f = folds.mosaic_folds(cov, np.zeros(n), groups, k=k, seed=0)
    counts = np.bincount(f, minlength=k)
    assert abs(counts - n / k).max() <= max(sizes), counts
    assert all(len(set(f[groups == g])) == 1 for g in range(len(sizes)))


def test_water_fill():
    q = folds.water_fill(np.array([5, 0, 2, 9]), 8, sizes=np.array([0, 0, 1, 0]))
    assert list(q) == [0, 5, 3, 0] and q.sum() == 8  # levels 5, 5, 5, 9
    q = folds.water_fill(np.array([3, 3, 3]), 2, sizes=np.array([10, 0, 5]))
    assert list(q) == [0, 1, 1]  # the spare items go to the smallest folds


def test_crossing_pairs_by_hand():
    from tgs.mosaic import Mosaics

    # a b c          folds: a b d -> 0, c e f -> 1; x is a test tile (not in the training ids)
    # d e f x
    m = Mosaics(list("abcdefx"), [0] * 7, [0, 0, 0, 1, 1, 1, 1], [0, 1, 2, 0, 1, 2, 3])
    ids = np.array(list("fedcba"))
    f = np.array([1, 1, 0, 1, 0, 0])  # in ids order
    assert folds.crossing_pairs(ids, f, m) == (3, 7)  # b-c, d-e, b-e cross; f-x is not train-train
    assert folds.crossing_pairs(ids, np.zeros(6, int), m) == (0, 7)


def test_folds_cli_with_mosaics(synthetic_root, tmp_path, capsys):
    from cli import mosaic as mosaic_cli
    from tgs.mosaic import Mosaics

    assert mosaic_cli.main(["--data-dir", str(synthetic_root), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    out = tmp_path / "f.csv"
    assert folds.main(["--data-dir", str(synthetic_root), "--k", "4", "--out", str(out),
                       "--mosaics", str(tmp_path / "m" / "mosaics.csv")]) == 0
    printed = capsys.readouterr().out
    assert "10 consecutive chunks (fold0..fold9)" in printed and "stratified (k=4, seed=0)" in printed
    mosaic_line = [line for line in printed.splitlines() if line.startswith("mosaic (k=4")][0]
    assert mosaic_line.split()[-3] == "0"  # "... 0 of N": no neighbour pair crosses the mosaic split
    df = pd.read_csv(out, dtype={"id": str})
    m = Mosaics.read(tmp_path / "m" / "mosaics.csv")
    fold_of = df.set_index("id")["fold"]
    train = m.ids[np.isin(m.ids, df["id"])]
    per_mosaic = pd.Series(fold_of.loc[train].to_numpy()).groupby(m.mosaic[np.isin(m.ids, df["id"])]).nunique()
    assert len(per_mosaic) > 0 and (per_mosaic == 1).all()


def test_a_bad_folds_file_is_one_line_naming_it(tmp_path):
    from datasets.folds import read_folds_file
    from tgs.errors import UserError

    bad = tmp_path / "f.csv"
    bad.write_text("id,fold\na,0\nb,1.5\n")
    with pytest.raises(UserError, match=r"f\.csv: id b has fold '1\.5', expected 0, 1, 2"):
        read_folds_file(bad, np.array(["a", "b"]))
    with pytest.raises(UserError, match=rf"--folds-file {tmp_path} is a folder, not a CSV file"):
        read_folds_file(tmp_path, np.array(["a", "b"]))


def test_folds_cli_with_a_header_only_mosaics_file(synthetic_root, tmp_path, capsys):
    """What mosaic.py writes when no pair is found (all-flat tiles): every tile is alone, the folds are made."""
    path = tmp_path / "mosaics.csv"
    path.write_text("id,mosaic,row,col\n")
    out = tmp_path / "f.csv"
    assert folds.main(["--data-dir", str(synthetic_root), "--k", "4", "--out", str(out), "--mosaics", str(path)]) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if line.startswith("mosaic (k=4")][0].split()[-3:-1] == ["0", "of"]
    assert sorted(pd.read_csv(out)["fold"].unique().tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize("seed", [3, 4])
def test_neighbour_groups_keep_more_true_neighbours_together_than_the_mosaics(seed):
    """Known truth: synthetic sections. The folds' groups hold every mosaic whole and join likely neighbours, so
    fewer true neighbour pairs lie apart than with the mosaics alone (measured: 11 -> 0 and 39 -> 17 of 143 and
    113 pairs)."""
    from datasets import mosaic, synthetic
    from tgs.mosaic import Mosaics

    s = synthetic.generate(400, np.random.default_rng(seed))
    found = mosaic.assemble(s.ids, s.images).mosaics
    by_mosaic = folds.mosaic_groups(s.ids, found)
    groups = folds.neighbour_groups(s.ids, found, s.images)
    for m in np.unique(by_mosaic[by_mosaic >= 0]):  # every mosaic whole, in one group
        assert len(np.unique(groups[by_mosaic == m])) == 1 and groups[by_mosaic == m][0] >= 0
    true = Mosaics(s.ids, s.section, s.row, s.col).adjacent_ids()
    where = pd.Index(s.ids)
    a, b = where.get_indexer(true["a"]), where.get_indexer(true["b"])
    apart = lambda g: int(((g[a] != g[b]) | (g[a] < 0)).sum())  # noqa: E731
    assert apart(groups) < apart(by_mosaic) and apart(groups) <= 0.2 * len(true)


def test_neighbour_groups_of_flat_tiles_are_all_alone():
    from tgs.mosaic import Mosaics

    images = np.full((5, 101, 101), 77, np.uint8)
    ids = np.array([f"t{i}" for i in range(5)])
    groups = folds.neighbour_groups(ids, Mosaics([], [], [], []), images)
    assert (groups == -1).all()
