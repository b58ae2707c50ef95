"""score.py and the submission helpers: scores, per-image output, and one-line errors with exit code 2."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from datasets import kaggle
from tgs import rle, submission

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
    assert submission.main(["--empty", "--ids", str(synthetic_root / "train.csv"), "--out", str(tmp_path / "e.csv")]) == 0
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
