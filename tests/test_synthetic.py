"""The synthetic generator: sections cut into tiles (the true layout), Kaggle's layout and file variety, the real
data's statistics, the per-tile look, determinism."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from datasets import synthetic


@pytest.fixture(scope="module")
def big():
    return synthetic.generate(1500, np.random.default_rng(0))


def true_pairs(s, dr, dc):
    """(a, b) indices of tiles with b at (row + dr, col + dc) of a in the same section."""
    key = pd.Series(np.arange(len(s.ids)), index=pd.MultiIndex.from_arrays([s.section, s.row, s.col]))
    want = pd.MultiIndex.from_arrays([s.section, s.row + dr, s.col + dc])
    b = key.reindex(want).to_numpy()
    a = np.flatnonzero(~np.isnan(b))
    return a, b[a].astype(np.int64)


def test_statistics_of_a_large_batch(big):
    s = big
    empty = ~s.masks.any(axis=(1, 2))
    assert 0.35 < empty.mean() < 0.43  # about 39% empty, as in the competition
    assert s.flat.any() and not s.masks[s.flat].any()
    assert (s.images[s.flat].min(axis=(1, 2)) == s.images[s.flat].max(axis=(1, 2))).all()
    cov = s.masks.mean(axis=(1, 2))[~empty]
    assert (cov == 1).any() and (cov < 0.02).any()  # full and tiny salt bodies both occur
    vertical = (s.masks == s.masks[:, :1]).all(axis=(1, 2)) & ~empty & (s.masks.mean(axis=(1, 2)) < 1)
    assert vertical.mean() > 0.02  # salt walls: masks whose rows are all equal, neither empty nor full
    assert len(set(s.ids)) == 1500 and all(len(i) == 10 for i in s.ids)
    int(s.ids[0], 16)


def test_sections_layout(big):
    s = big
    positions = pd.DataFrame({"s": s.section, "r": s.row, "c": s.col})
    assert not positions.duplicated().any()
    pairs = [true_pairs(s, 1, 0), true_pairs(s, 0, 1)]
    has = np.zeros(len(s.ids), bool)
    for a, b in pairs:
        has[a] = has[b] = True
    assert 0.18 < has.mean() < 0.32  # about a quarter of the tiles have a kept neighbour
    assert len(np.unique(s.section)) >= 10  # several sections, most tiles isolated
    # depths grow with the row inside a section
    a, b = pairs[0]
    assert (s.depths[b] > s.depths[a]).all()
    # flat tiles are a blank last row of their section, or wholly in the water over its sea floor
    last = s.row == pd.Series(s.row).groupby(s.section).transform("max").to_numpy()
    assert (last | (s.row == 0))[s.flat].all()


def water_rows(images):
    """How many rows at the top of each image are one grey level, all of them the same (the sea's still water)."""
    same = (images == images[:, :1, :1]).all(axis=2)
    return np.where(same.all(axis=1), images.shape[1], np.argmin(same, axis=1))


def test_the_sea_floor_tops_some_sections_with_still_water(big):
    """As at the top of the real sections: still water (one grey level, no salt) over a bright sea floor that runs
    on across the neighbouring tiles; about 4% of the tiles, all in the top rows of their sections."""
    s = big
    water = water_rows(s.images)
    partly = (water > 0) & ~s.flat
    assert 0.02 < partly.mean() < 0.08
    assert (s.row[partly] <= 1).all() and not s.masks[partly, :10].any()  # no salt in the water
    tiles = np.flatnonzero(partly)
    below = s.images[tiles, np.minimum(water[tiles] + 1, 100)].astype(np.float32)  # the sea floor, just below
    assert (below.mean(axis=1) > s.images[tiles].reshape(len(tiles), -1).mean(axis=1)).mean() > 0.9
    # every section under the sea: the floor runs on from a tile's right edge into its right neighbour's left edge
    sections = synthetic.draw_sections(np.random.default_rng(1), 600)
    sections = dataclasses.replace(sections, sea_depth=np.full(len(sections.cells.width), 50.0))
    c = sections.cells
    images, masks = synthetic.render_all(sections, np.arange(len(c.section)), np.random.default_rng(2))
    layout = synthetic.Synthetic(np.arange(len(c.section)).astype(str), images, masks, sections.depths,
                                 sections.flat, c.section, c.row, c.col)
    a, b = true_pairs(layout, 0, 1)
    top = (c.row[a] == 0) & ~sections.flat[a] & ~sections.flat[b]
    assert top.sum() >= 10
    assert (water_rows(images[a[top], :, -1:]) > 0).all()
    assert np.abs(water_rows(images[a[top], :, -1:]) - water_rows(images[b[top], :, :1])).max() <= 2
    assert not masks[a[top], :10].any()


def test_tiles_continue_across_edges(big):
    """Edges of neighbours continue each other (up to jitter and noise); edges of other tiles do not."""
    s = big
    img = s.images.astype(np.float32)
    rng = np.random.default_rng(0)
    for (a, b), first, second in ((true_pairs(s, 0, 1), img[:, :, -1], img[:, :, 0]),
                                  (true_pairs(s, 1, 0), img[:, -1, :], img[:, 0, :])):
        ok = ~s.flat[a] & ~s.flat[b]
        a, b = a[ok], b[ok]

        def corr(x, y):
            x = x - x.mean(axis=1, keepdims=True)
            y = y - y.mean(axis=1, keepdims=True)
            return (x * y).sum(axis=1) / np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))

        true = corr(first[a], second[b])
        other = corr(first[a], second[rng.permutation(b)])
        # noisy seams, as on the real data: the median true edge correlation is about 0.79
        assert np.median(true) > 0.75 and np.median(np.abs(other)) < 0.4, (np.median(true), np.median(other))


def test_salt_texture_differs_from_sediment():
    """Sediment is layered (strong vertical, weak horizontal variation); salt interiors are not."""
    s = synthetic.generate(300, np.random.default_rng(1))
    img = s.images.astype(np.float32)
    dy = np.abs(np.diff(img, axis=1))[:, :, :-1]
    dx = np.abs(np.diff(img, axis=2))[:, :-1, :]
    inside = s.masks[:, 1:, 1:] & s.masks[:, :-1, 1:] & s.masks[:, 1:, :-1]
    outside = ~s.masks[:, 1:, 1:] & ~s.masks[:, :-1, 1:] & ~s.masks[:, 1:, :-1]
    outside &= ~s.flat[:, None, None]
    ratio_out = dy[outside].mean() / dx[outside].mean()
    ratio_in = dy[inside].mean() / dx[inside].mean()
    assert ratio_out > 1.5 and ratio_in < 1.3, (ratio_out, ratio_in)
    # the salt boundary is a bright rim: brighter than the tile's salt interior on average
    edge = s.masks ^ np.roll(s.masks, 1, axis=2)
    edge[:, :, 0] = False
    salty = s.masks.any(axis=(1, 2)) & ~s.masks.all(axis=(1, 2))
    rim = [np.abs(img[i][edge[i]] - img[i].mean()).mean() for i in np.flatnonzero(salty)[:50]]
    interior = [np.abs(img[i][s.masks[i] & ~edge[i]] - img[i].mean()).mean() for i in np.flatnonzero(salty)[:50]]
    assert np.mean(rim) > np.mean(interior)


def test_seeded(tmp_path):
    a = synthetic.generate(60, np.random.default_rng(5))
    b = synthetic.generate(60, np.random.default_rng(5))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.ids, b.ids)
    assert np.array_equal(a.section, b.section) and np.array_equal(a.col, b.col)
    c = synthetic.generate(60, np.random.default_rng(6))
    assert not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("n", [0, 1, 3, 40])
def test_tiny_sets(n):
    s = synthetic.generate(n, np.random.default_rng(n))
    assert s.images.shape == (n, 101, 101) and len(s.section) == n


def test_layout_written(synthetic_root):
    tr = pd.read_csv(synthetic_root / "train.csv", dtype=str, keep_default_na=False)
    dp = pd.read_csv(synthetic_root / "depths.csv", dtype={"id": str})
    ss = pd.read_csv(synthetic_root / "sample_submission.csv", dtype=str)
    assert tr.columns.tolist() == ["id", "rle_mask"] and len(tr) == 120
    assert dp.columns.tolist() == ["id", "z"] and len(dp) == 160
    assert set(dp["id"]) == set(tr["id"]) | set(ss["id"])
    assert ss.columns.tolist() == ["id", "rle_mask"] and (ss["rle_mask"] == "1 1").all()
    assert (tr["rle_mask"] == "").any()
    assert len(list((synthetic_root / "test/images").glob("*.png"))) == 40
    layout = synthetic.read_layout(synthetic_root)
    assert layout.columns.tolist() == ["id", "section", "row", "col"]
    assert set(layout["id"]) == set(dp["id"]) and not layout.duplicated(["section", "row", "col"]).any()
    assert not (synthetic_root / "train" / synthetic.LAYOUT_FILE).exists()  # beside Kaggle's layout, not in it


def test_write_dataset_is_seeded(tmp_path):
    a = synthetic.write_dataset(tmp_path / "a", 20, 10, seed=3)
    synthetic.write_dataset(tmp_path / "b", 20, 10, seed=3)
    assert a["sections"] >= 1 and a["train"] == 20
    for name in ("train.csv", "depths.csv", "sample_submission.csv", synthetic.LAYOUT_FILE):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_cli_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert synthetic.main(["--out", str(tmp_path), "--train", "2", "--test", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path / "new"), "--train", "3", "--test", "2"]) == 0


def test_force_replaces_an_old_dataset_and_keeps_other_files(tmp_path, capsys):
    out = tmp_path / "d"
    assert synthetic.main(["--out", str(out), "--train", "30", "--test", "10", "--seed", "1"]) == 0
    (out / "notes.txt").write_text("keep me")
    assert synthetic.main(["--out", str(out), "--train", "5", "--test", "3", "--seed", "2", "--force"]) == 0
    assert len(list((out / "train" / "images").iterdir())) == 5 and len(list((out / "test" / "images").iterdir())) == 3
    assert (out / "notes.txt").read_text() == "keep me"
    assert synthetic.main(["--out", str(tmp_path / "e"), "--train", "0"]) == 2
    assert "--train: must be >= 1, got 0" in capsys.readouterr().err
