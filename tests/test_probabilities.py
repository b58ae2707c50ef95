"""Saved probabilities: round trip, quantisation bound, no pickle, every malformed file refused in one line
(naming it), running mean."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tgs import probabilities as P
from tgs.errors import DataError, UserError

ROOT = Path(__file__).resolve().parents[1]


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
    with pytest.raises(DataError, match="not a readable .npz"):
        P.load(tmp_path / "x.npz")
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(DataError, match="no 'ids' array"):
        P.load(tmp_path / "y.npz")
    np.save(tmp_path / "z.npy", np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        P.load(tmp_path / "z.npy")


def _arrays(n: int = 4, size: int = 101) -> dict:
    """The arrays of a valid predictions file of ``n`` ids, as save writes them."""
    return dict(ids=np.array([f"id{i:08d}" for i in range(n)]), probs=np.zeros((n, size, size), np.uint8),
                image_probs=np.array([0.0, 1.0, np.nan, 0.5][:n] + [0.5] * (n - 4), np.float32),
                models=np.array(["a.pth"]), split=np.asarray("test"))


def _written(tmp_path, **changes) -> Path:
    """A predictions file whose arrays are those of :func:`_arrays` with ``changes`` (None drops an array)."""
    arrays = {k: v for k, v in (_arrays() | changes).items() if v is not None}
    path = tmp_path / "p.npz"
    np.savez_compressed(path, **arrays)
    return path


def test_the_crafted_file_is_valid(tmp_path):
    got = P.load(_written(tmp_path))
    assert len(got) == 4 and got.probs.shape == (4, 101, 101) and got.split == "test"
    np.testing.assert_array_equal(got.image_probs, [0.0, 1.0, np.nan, 0.5])


@pytest.mark.parametrize("changes, words", [
    (dict(probs=np.zeros((4, 50, 50), np.uint8)), "'probs' must be uint8 of shape (4, 101, 101)"),
    (dict(probs=np.zeros((4, 101, 101), np.float32)), "got float32"),
    (dict(probs=np.zeros((3, 101, 101), np.uint8)), "(4, 101, 101)"),
    (dict(image_probs=np.zeros(3, np.float32)), "'image_probs' must be float of shape (4,)"),
    (dict(image_probs=np.zeros((4, 1), np.float32)), "'image_probs' must be float of shape (4,)"),
    (dict(image_probs=np.zeros(4, np.int64)), "'image_probs' must be float"),
    (dict(image_probs=np.array([0, 1.5, 0, 0], np.float32)), "id 'id00000001' is 1.5, not in [0, 1]"),
    (dict(image_probs=np.array([0, 0, -np.inf, 0], np.float32)), "id 'id00000002' is -inf"),
    (dict(ids=np.array(["a", "b", "a", "c"])), "id 'a' appears 2 times"),
    (dict(ids=np.array(["a", "", "b", "c"])), "id number 1 is empty"),
    (dict(ids=np.arange(4)), "'ids' must be a 1-D array of strings"),
    (dict(ids=np.array([["a", "b"], ["c", "d"]])), "'ids' must be a 1-D array of strings"),
    (dict(ids=np.array([], str), probs=np.zeros((0, 101, 101), np.uint8), image_probs=np.zeros(0, np.float32)),
     "holds no predictions"),
    (dict(models=np.array([1, 2])), "'models' must be a 1-D array of strings"),
    (dict(split=np.asarray("train")), "'split' must be one of test, valid, got 'train'"),
    (dict(split=np.array(["test"])), "'split' must be one of test, valid"),
    (dict(image_probs=None), "no 'image_probs' array"),
    (dict(split=None), "no 'split' array"),
])
def test_malformed_arrays_are_refused_naming_the_file(tmp_path, changes, words):
    path = _written(tmp_path, **changes)
    with pytest.raises(DataError) as exc:
        P.load(path)
    message = str(exc.value)
    assert str(path) in message and words in message and "\n" not in message


def test_truncated_and_corrupt_files(tmp_path):
    rng = np.random.default_rng(1)
    whole = P.save(tmp_path / "p.npz", [f"id{i}" for i in range(20)], rng.random((20, 101, 101))).read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(DataError, match="cut.npz is not a readable .npz probabilities file: corrupt or truncated"):
        P.load(cut)
    flipped = bytearray(whole)
    flipped[len(whole) // 2] ^= 0xFF  # inside the compressed probabilities
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="flip.npz is not a readable .npz probabilities file: corrupt or truncated"):
        P.load(tmp_path / "flip.npz")


def test_object_arrays_are_refused_as_pickles(tmp_path):
    np.savez(tmp_path / "pickled.npz", **(_arrays() | dict(ids=np.array(["a", 1, None, "b"], dtype=object))))
    with pytest.raises(DataError, match=r"pickled.npz holds an object array \(pickled data\), refused"):
        P.load(tmp_path / "pickled.npz")


def test_test_script_refuses_a_bad_file_in_one_line(synthetic_root, tmp_path):
    """End to end: test.py --from-probabilities with predictions of 50x50 tiles exits 2 with one line, writes
    nothing (before, it wrote a submission that score.py --check called valid)."""
    from datasets import kaggle

    ids = kaggle.read_sample_submission(synthetic_root / "sample_submission.csv")
    bad = P.save(tmp_path / "small.npz", ids, np.zeros((len(ids), 50, 50), np.float32))
    r = subprocess.run([sys.executable, "test.py", "--from-probabilities", str(bad), "--output-prefix",
                        str(tmp_path / "out"), "--data-dir", str(synthetic_root)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), r.stderr
    assert f"{bad}: 'probs' must be uint8 of shape ({len(ids)}, 101, 101)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.npz"]


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
