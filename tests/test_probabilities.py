"""Saved probabilities: round trip, quantisation bound, no pickle, running mean."""
import numpy as np
import pytest

from tgs import probabilities as P
from tgs.errors import UserError


def test_round_trip_and_quantisation(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random((5, 101, 101)).astype(np.float32)
    path = P.save(tmp_path / "p.npz", [f"id{i}" for i in range(5)], probs, np.arange(5) / 5, ["a.pth"], "valid")
    got = P.load(path)
    assert list(got.ids) == [f"id{i}" for i in range(5)] and got.split == "valid" and got.models == ["a.pth"]
    assert np.abs(got.probs - probs).max() <= 0.5 / 255 + 1e-7
    np.testing.assert_allclose(got.image_probs, np.arange(5) / 5)
    with np.load(path, allow_pickle=False) as z:
        assert z["probs"].dtype == np.uint8
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        P.load(tmp_path / "none.npz")
    (tmp_path / "x.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a readable .npz"):
        P.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(UserError, match="no 'ids' array"):
        P.load(tmp_path / "y.npz")


def test_running_mean():
    m = P.RunningMean()
    a, b = np.full((2, 4, 4), 0.2, np.float32), np.full((2, 4, 4), 0.6, np.float32)
    m.add(["x", "y"], a, np.array([0.0, 1.0]), "m1")
    m.add(["x", "y"], b, np.array([1.0, 1.0]), "m2")
    out = m.mean()
    np.testing.assert_allclose(out.probs, 0.4)
    np.testing.assert_allclose(out.image_probs, [0.5, 1.0])
    assert out.models == ["m1", "m2"]
    with pytest.raises(UserError, match="ids differ"):
        m.add(["y", "x"], a)


def test_running_mean_keeps_unknown_image_probabilities_unknown_per_image():
    """As tgs.inference.Ensemble: an image whose probability is NaN in any set is NaN in the mean, the others are
    averaged; a set without image probabilities makes them all unknown."""
    m = P.RunningMean()
    probs = np.zeros((3, 2, 2), np.float32)
    m.add(["a", "b", "c"], probs, np.array([0.2, np.nan, 0.4], np.float32))
    m.add(["a", "b", "c"], probs, np.array([0.6, 0.5, np.nan], np.float32))
    np.testing.assert_allclose(m.mean().image_probs, [0.4, np.nan, np.nan])
    m.add(["a", "b", "c"], probs)
    assert np.isnan(m.mean().image_probs).all()
