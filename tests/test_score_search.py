"""score.py --search: the best post-processing on out-of-fold probabilities, from the command line."""
import re

import numpy as np
import pytest

from datasets import kaggle
from tgs import postprocess, submission
from tgs import probabilities as P


def value(out: str, label: str) -> float:
    return float(re.search(rf"^{label}\s+score ([0-9.]+)", out, re.M).group(1))


def test_search_finds_planted_threshold_and_matches_a_scored_submission(synthetic_root, truth, tmp_path, run_score):
    ids, masks = truth
    ids, masks = ids[:60], masks[:60]
    assert masks.any(axis=(1, 2)).sum() >= 10  # the planted threshold matters on salt images
    probs = np.where(masks, 0.4, 0.1).astype(np.float32)
    rng = np.random.default_rng(0)
    probs[rng.random(probs.shape) < 0.002] = 0.45  # salt-and-pepper just above the best threshold band
    npz = P.save(tmp_path / "oof.npz", ids, probs, np.full(len(ids), 0.5, np.float32), split="valid")
    code, out, err = run_score(["--search", npz, "--truth", synthetic_root / "train.csv"])
    assert code == 0, err
    assert "searched 60 images" in out and "flat" in out
    best = re.search(r"test.py flags: --threshold ([0-9.]+) --min-area (\d+)", out)
    assert 0.1 <= float(best.group(1)) < 0.4
    gain = float(re.search(r"^gain\s+([+-][0-9.]+)", out, re.M).group(1))
    assert gain > 0.1 and value(out, "best") == pytest.approx(value(out, "default") + gain, abs=2e-6)
    # the default line is the score of the submission test.py writes with the default post-processing
    loaded = P.load(npz)
    images = kaggle.read_pngs(synthetic_root / "train" / "images", ids)
    sub = postprocess.apply(loaded.probs, loaded.image_probs, images)
    submission.write(tmp_path / "default.csv", ids, masks=sub)
    code, scored, _ = run_score([tmp_path / "default.csv", "--truth", synthetic_root / "train.csv", "--subset"])
    assert code == 0
    assert float(re.search(r"^score\s+([0-9.]+)", scored, re.M).group(1)) == pytest.approx(value(out, "default"),
                                                                                           abs=2e-6)


def test_search_with_a_mask_folder_and_errors(synthetic_root, truth, tmp_path, run_score):
    ids, masks = truth
    npz = P.save(tmp_path / "oof.npz", ids[:20], masks[:20].astype(np.float32), split="valid")
    code, out, _ = run_score(["--search", npz, "--truth", synthetic_root / "train" / "masks"])
    assert code == 0 and "best     score 1.000000" in out  # perfect predictions stay perfect
    bad = P.save(tmp_path / "bad.npz", ["zzzzzzzzzz", *ids[:3]], np.zeros((4, 101, 101), np.float32), split="valid")
    code, _, err = run_score(["--search", bad, "--truth", synthetic_root / "train.csv"])
    assert code == 2 and "zzzzzzzzzz" in err and err.count("\n") == 1
    code, _, err = run_score(["x.csv", "--search", npz, "--truth", synthetic_root / "train.csv"])
    assert code == 2 and "--search OOF.npz goes with --truth only" in err
    code, _, err = run_score(["--truth", synthetic_root / "train.csv"])
    assert code == 2 and "give a SUBMISSION.csv" in err
    code, _, err = run_score(["--search", tmp_path / "none.npz", "--truth", synthetic_root / "train.csv"])
    assert code == 2 and "none.npz does not exist" in err


def test_save_best_writes_what_test_py_reads(synthetic_root, truth, tmp_path, run_score):
    ids, masks = truth
    ids, masks = ids[:60], masks[:60]
    probs = np.where(masks, 0.4, 0.1).astype(np.float32)  # the best threshold lies below 0.4, not at 0.5
    npz = P.save(tmp_path / "oof.npz", ids, probs, np.full(len(ids), 0.5, np.float32), split="valid")
    code, out, err = run_score(["--search", npz, "--truth", synthetic_root / "train.csv",
                                "--save-best", tmp_path / "post.json"])
    assert code == 0, err
    best, info = postprocess.load_setting(tmp_path / "post.json")
    assert f"test.py flags: {best.flags()}" in out and 0.1 <= best.threshold < 0.4
    assert info["score"] == pytest.approx(value(out, "best"), abs=1e-6)
    assert info["default_score"] == pytest.approx(value(out, "default"), abs=1e-6)
    assert info["images"] == 60 and info["searched_on"] == str(npz)
    code, _, err = run_score([tmp_path / "x.csv", "--truth", synthetic_root / "train.csv", "--save-best", "p.json"])
    assert code == 2 and "--save-best goes with --search" in err
