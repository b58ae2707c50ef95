"""The synthetic generator: Kaggle's layout and file variety, the real data's statistics, determinism."""
import numpy as np
import pandas as pd

from datasets import synthetic


def test_statistics_of_a_large_batch():
    s = synthetic.generate(1500, np.random.default_rng(0))
    empty = ~s.masks.any(axis=(1, 2))
    assert 0.35 < empty.mean() < 0.43  # about 39% empty, as in the competition
    assert s.flat.any() and not s.masks[s.flat].any()
    assert (s.images[s.flat].min(axis=(1, 2)) == s.images[s.flat].max(axis=(1, 2))).all()
    cov = s.masks.mean(axis=(1, 2))[~empty]
    assert (cov == 1).any() and (cov < 0.02).any()  # full and tiny salt bodies both occur
    assert len(set(s.ids)) == 1500 and all(len(i) == 10 for i in s.ids)
    int(s.ids[0], 16)


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


def test_seeded(tmp_path):
    a = synthetic.generate(20, np.random.default_rng(5))
    b = synthetic.generate(20, np.random.default_rng(5))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.ids, b.ids)


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


def test_cli_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").write_text("keep me")
    assert synthetic.main(["--out", str(tmp_path), "--train", "2", "--test", "1"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert synthetic.main(["--out", str(tmp_path / "new"), "--train", "3", "--test", "2"]) == 0
