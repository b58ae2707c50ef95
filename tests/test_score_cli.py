"""score.py and the submission helpers: scores, per-image output, and one-line errors with exit code 2."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets import kaggle
from tgs import rle, submission
from tgs.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_perfect_and_empty(synthetic_root, truth, tmp_path, run_score):
    ids, masks = truth
    submission.write(tmp_path / "p.csv", ids, masks=masks)
    code, out, _ = run_score([tmp_path / "p.csv", "--truth", synthetic_root / "train.csv"])
    assert code == 0 and "score         1.000000" in out
    submission.write(tmp_path / "e.csv", ids, rles=[""] * len(ids))
    per = tmp_path / "per.csv"
    code, out, _ = run_score([tmp_path / "e.csv", "--truth", synthetic_root / "train/masks", "--per-image", per])
    empty_frac = (~masks.any(axis=(1, 2))).mean()
    assert code == 0 and f"score         {empty_frac:.6f}" in out
    df = pd.read_csv(per, dtype={"id": str})
    assert df.columns.tolist() == ["id", "score", "iou"] and len(df) == len(ids)
    assert df["score"].mean() == pytest.approx(empty_frac)
    code, out, err = run_score([tmp_path / "e.csv", "--truth", synthetic_root / "train/images"])
    assert code == 2 and "holds the seismic images, not masks" in err and err.count("\n") == 1


def test_rows_in_any_order_and_subset(synthetic_root, truth, tmp_path, run_score):
    ids, masks = truth
    order = np.random.default_rng(0).permutation(len(ids))
    submission.write(tmp_path / "s.csv", ids[order], masks=masks[order])
    assert run_score([tmp_path / "s.csv", "--truth", synthetic_root / "train.csv"])[0] == 0
    submission.write(tmp_path / "half.csv", ids[:30], masks=np.zeros((30, 101, 101), bool))
    code, _, err = run_score([tmp_path / "half.csv", "--truth", synthetic_root / "train.csv"])
    assert code == 2 and "90 of the 120 ids" in err and "are missing" in err
    code, out, _ = run_score([tmp_path / "half.csv", "--truth", synthetic_root / "train.csv", "--subset"])
    assert code == 0 and "images        30" in out


@pytest.mark.parametrize("content,fragment", [
    ("id,mask\na,\n", "header is 'id,mask'"),
    ("id,rle_mask\n{0},\n{0},\n", "appear more than once: {0}"),
    ("id,rle_mask\n{0},1 x\n", "id {0}: RLE value 'x'"),
    ("id,rle_mask\nzzzzzzzzzz,\n", "1 ids are not in"),
])
def test_bad_submissions(synthetic_root, truth, tmp_path, run_score, content, fragment):
    ident = truth[0][0]
    (tmp_path / "bad.csv").write_text(content.format(ident))
    code, _, err = run_score([tmp_path / "bad.csv", "--truth", synthetic_root / "train.csv", "--subset"])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert fragment.format(ident) in err


def test_check_test_submission(synthetic_root, tmp_path, run_score):
    ids = kaggle.read_sample_submission(synthetic_root / "sample_submission.csv")
    masks = np.zeros((len(ids), 101, 101), bool)
    masks[::2, 10:20, 10:20] = True
    submission.write(tmp_path / "t.csv", ids, masks=masks)
    code, out, _ = run_score([tmp_path / "t.csv", "--check", synthetic_root])
    assert code == 0 and "valid submission of 40 ids (50.0% empty masks)" in out
    submission.write(tmp_path / "short.csv", ids[:-3], masks=masks[:-3])
    code, _, err = run_score([tmp_path / "short.csv", "--check", synthetic_root])
    assert code == 2 and "3 of the 40 ids" in err and ids[-1] in err


def test_submission_tool_writes_baselines(synthetic_root, tmp_path):
    argv = ["--empty", "--ids", str(synthetic_root / "train.csv"), "--out", str(tmp_path / "e.csv")]
    assert submission.main(argv) == 0
    df = pd.read_csv(tmp_path / "e.csv", dtype=str, keep_default_na=False)
    assert df.columns.tolist() == ["id", "rle_mask"] and (df["rle_mask"] == "").all()
    assert submission.main(["--masks", str(synthetic_root / "train/masks"), "--out", str(tmp_path / "p.csv")]) == 0
    p = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False).set_index("id")
    t = pd.read_csv(synthetic_root / "train.csv", dtype=str, keep_default_na=False).set_index("id")
    assert p.loc[t.index, "rle_mask"].tolist() == t["rle_mask"].tolist()  # identical RLE text to train.csv


def test_written_csv_format(tmp_path):
    m = np.zeros((2, 101, 101), bool)
    m[1, 0, 0] = True
    submission.write(tmp_path / "s.csv", ["aaaaaaaaaa", "bbbbbbbbbb"], masks=m)
    assert (tmp_path / "s.csv").read_text() == "id,rle_mask\naaaaaaaaaa,\nbbbbbbbbbb,1 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left behind


def test_no_traceback_from_the_script(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "score.py"), str(tmp_path / "missing.csv"), "--truth", "x.csv"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().startswith("error:")
    assert r.stderr.count("\n") == 1


# -- hostile submissions --------------------------------------------------------------------------------------------
def _submission(path, ids, rles, newline="\n"):
    path.write_bytes(("id,rle_mask" + newline + "".join(f"{i},{r}{newline}" for i, r in zip(ids, rles))).encode())
    return path


@pytest.mark.parametrize("bad,fragment", [
    ("1234567890" * 2000, "RLE value '1234567890123456789012345678901234567890...' (20000 characters) has 20000 "
                          "digits"),
    ("1 \u00b2", "RLE value '\u00b2' is not a positive integer"),
    ("1\t2", "RLE value '1\\t2' is not a positive integer"),
    ("1  2", "has two spaces in a row"),
])
def test_hostile_rle_is_one_line_naming_the_id(synthetic_root, truth, tmp_path, run_score, bad, fragment):
    ids = truth[0]
    rles = [""] * len(ids)
    rles[50] = bad
    sub = _submission(tmp_path / "hostile.csv", ids, rles)
    for mode in (["--truth", synthetic_root / "train.csv"], ["--truth", synthetic_root / "train/masks"]):
        code, _, err = run_score([sub, *mode])
        assert code == 2 and err.count("\n") == 1 and len(err) < 250, err
        assert err.startswith(f"error: id {ids[50]}: ") and fragment in err, err


def test_hostile_check_submission(synthetic_root, tmp_path, run_score):
    ids = kaggle.read_sample_submission(synthetic_root / "sample_submission.csv")
    rles = [""] * len(ids)
    rles[-1] = "1" * 30_000
    code, _, err = run_score([_submission(tmp_path / "t.csv", ids, rles), "--check", synthetic_root])
    assert code == 2 and err.count("\n") == 1 and len(err) < 250, err
    assert f"id {ids[-1]}: RLE value '111" in err and "(30000 characters)" in err


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_a_giant_field_is_refused_before_pandas(truth, tmp_path, monkeypatch, newline):
    ids = truth[0][:10]
    rles = ["1 1"] * 10
    rles[4] = "1 1 " * 100_000  # 400 KB on one line
    sub = _submission(tmp_path / "giant.csv", ids, rles, newline)

    def read_csv(*args, **kwargs):
        raise AssertionError("pandas read a file with a giant field")

    monkeypatch.setattr(pd, "read_csv", read_csv)
    for block in (1 << 20, 1000, 7):  # the line is found whatever the block boundaries
        with pytest.raises(DataError) as err:
            submission.check_lines(sub, block=block)
        assert str(err.value) == (f"{sub}: line 6 is longer than any valid submission row (more than 35512 bytes: "
                                  "an id and the longest RLE of a 101x101 mask)")
    with pytest.raises(DataError, match="line 6 is longer"):
        submission.read(sub)


def test_lines_and_quotes(truth, tmp_path):
    ids = truth[0][:6]
    m = np.zeros((6, 101, 101), bool)
    m[1::2, 5:50, 3:90] = True
    rles = rle.encode(m)
    for newline in ("\n", "\r\n", "\r"):
        sub = _submission(tmp_path / "s.csv", ids, rles, newline)
        for block in (5, 2, 1):  # block boundaries everywhere, a '\r\n' split between blocks among them
            submission.check_lines(sub, block=block)
    longest = np.zeros(10201, bool)
    longest[::2] = True
    m[3] = longest.reshape(101, 101).T
    rles[3] = rle.encode(m[3])[0]  # the longest valid RLE makes a valid row
    for newline in ("\n", "\r\n", "\r"):
        sub = _submission(tmp_path / "s.csv", ids, rles, newline)
        assert np.array_equal(submission.decode(submission.read(sub)), m)
    quoted = tmp_path / "q.csv"
    quoted.write_text('"id","rle_mask"\n' + "".join(f'"{i}","{r}"\n' for i, r in zip(ids, rles)))
    assert np.array_equal(submission.decode(submission.read(quoted)), m)  # quoting every field is valid
    across = tmp_path / "across.csv"
    across.write_bytes(b'id,rle_mask\r\na,1 1\r\nb,"1 1\r\n3 1"\r\n')
    for block in (1 << 20, 3, 1):
        with pytest.raises(DataError, match=r"across.csv: line 3 has an unclosed quote"):
            submission.check_lines(across, block=block)


def test_an_id_longer_than_a_file_name(tmp_path, run_score, synthetic_root):
    sub = tmp_path / "long-id.csv"
    sub.write_text("id,rle_mask\nabc,\n" + "x" * 5000 + ",1 1\n")
    code, _, err = run_score([sub, "--truth", synthetic_root / "train.csv"])
    assert code == 2 and err.count("\n") == 1 and len(err) < 250, err
    assert "row 3 has an id longer than a file name (255 characters): 'xxxx" in err and "(5000 characters)" in err


def test_hostile_file_through_the_script(synthetic_root, truth, tmp_path):
    ids = truth[0]
    rles = [""] * len(ids)
    rles[7] = "9" * 2_000_000
    sub = _submission(tmp_path / "hostile.csv", ids, rles)
    r = subprocess.run([sys.executable, str(ROOT / "score.py"), str(sub), "--truth", str(synthetic_root / "train.csv")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"error: {sub}: line 9 is longer than any valid submission row (more than 35512 bytes: an id "
                        "and the longest RLE of a 101x101 mask)\n")
