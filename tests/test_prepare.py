"""Unpacking the competition zip (nested train.zip / test.zip) into Kaggle's layout."""
import io
import zipfile

import numpy as np

from datasets import kaggle, prepare


def _zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def make_competition_zip(src, path):
    train = {f"images/{p.name}": p.read_bytes() for p in (src / "train/images").iterdir()}
    train |= {f"masks/{p.name}": p.read_bytes() for p in (src / "train/masks").iterdir()}
    test = {f"images/{p.name}": p.read_bytes() for p in (src / "test/images").iterdir()}
    outer = {"train.zip": _zip_bytes(train), "test.zip": _zip_bytes(test), "flamingo.zip": _zip_bytes({"x": b"1"}),
             "../evil.csv": b"id,z\n", "__MACOSX/._train.csv": b"junk"}
    outer |= {n: (src / n).read_bytes() for n in ("train.csv", "depths.csv", "sample_submission.csv")}
    path.write_bytes(_zip_bytes(outer))


def test_prepare_round_trip(synthetic_root, tmp_path, capsys):
    z = tmp_path / "tgs-salt-identification-challenge.zip"
    make_competition_zip(synthetic_root, z)
    out = tmp_path / "data"
    assert prepare.main([str(z), "--out", str(out)]) == 0
    assert "unpacked into" in capsys.readouterr().out
    assert not (tmp_path / "evil.csv").exists()
    a = kaggle.load_train(synthetic_root, cache=False)
    b = kaggle.load_train(out, cache=False)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.depths, b.depths)
    assert np.array_equal(kaggle.load_test(out, cache=False).images, kaggle.load_test(synthetic_root, cache=False).images)


def test_prepare_from_folder_of_downloads(synthetic_root, tmp_path):
    dl = tmp_path / "downloads"
    dl.mkdir()
    (dl / "train.zip").write_bytes(_zip_bytes(
        {f"train/images/{p.name}": p.read_bytes() for p in (synthetic_root / "train/images").iterdir()}
        | {f"train/masks/{p.name}": p.read_bytes() for p in (synthetic_root / "train/masks").iterdir()}))
    (dl / "test.zip").write_bytes(_zip_bytes(
        {f"images/{p.name}": p.read_bytes() for p in (synthetic_root / "test/images").iterdir()}))
    for n in ("train.csv", "depths.csv", "sample_submission.csv"):
        (dl / n).write_bytes((synthetic_root / n).read_bytes())
    out = tmp_path / "data"
    assert prepare.main([str(dl), "--out", str(out)]) == 0
    assert len(kaggle.load_train(out, cache=False)) == 120


def test_prepare_bad_input(tmp_path, capsys):
    assert prepare.main([str(tmp_path / "missing.zip"), "--out", str(tmp_path / "d")]) == 2
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"nope")
    assert prepare.main([str(bad), "--out", str(tmp_path / "d")]) == 2
    assert "is not a zip file" in capsys.readouterr().err
