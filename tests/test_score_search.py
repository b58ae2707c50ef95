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
    assert info.score == pytest.approx(value(out, "best"), abs=1e-6)
    assert info.default_score == pytest.approx(value(out, "default"), abs=1e-6)
    assert info.images == 60 and info.searched_on == str(npz)
    code, _, err = run_score([tmp_path / "x.csv", "--truth", synthetic_root / "train.csv", "--save-best", "p.json"])
    assert code == 2 and "--save-best goes with --search" in err


# -- the honest search: held-out gains, folds, mosaic rules -------------------------------------------------------
from tests.test_postprocess import overfitting_case  # noqa: E402
from tgs import rle  # noqa: E402
from tgs.mosaic import Mosaics  # noqa: E402

S = 101


def tiny_dataset(root, masks, test_ids=()):
    """DATA/train.csv (ids r00, r01 ... in this order) and DATA/sample_submission.csv; no images."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    ids = np.array([f"r{i:02d}" for i in range(len(masks))])
    pd.DataFrame({"id": ids, "rle_mask": rle.encode(masks)}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": list(test_ids), "rle_mask": "1 1"}).to_csv(root / "sample_submission.csv", index=False)
    return ids


def test_score_py_reports_the_held_out_gain_and_saves_the_setting_that_generalises(tmp_path, run_score):
    q, truth, _ = overfitting_case()  # fold0 = rows 0..9, fold1 = rows 10..19 of a 100-image set
    masks = np.zeros((100, S, S), bool)
    masks[:20] = truth
    ids = tiny_dataset(tmp_path / "data", masks)
    npz = P.save(tmp_path / "oof.npz", ids[:20], q, split="valid")
    argv = ["--search", npz, "--truth", tmp_path / "data" / "train.csv", "--save-best", tmp_path / "post.json"]
    code, out, err = run_score(argv + ["--oof-folds", "fold0,fold1"])
    assert code == 0, err
    assert "in 2 folds (fold0 10, fold1 10)" in out and "held-out gain -0.400000" in out
    assert value(out, "best") == pytest.approx(0.6) and "gain     +0.100000" in out
    assert "keeping the defaults" in out and f"test.py flags: {postprocess.DEFAULTS.flags()}" in out
    saved, info = postprocess.load_setting(tmp_path / "post.json")
    assert saved == postprocess.DEFAULTS and info.score == info.default_score == 0.5
    assert info.held_out_gain == -0.4 and info.in_sample_gain == 0.1 and info.in_sample_best.min_area > 100
    assert info.empty_share == 0.1 and info.true_empty_share == 0.6 and info.folds == {"fold0": 10, "fold1": 10}
    # the default folds: each image's chunk of the 10-chunk split, here the same two
    code, again, _ = run_score(argv)
    assert code == 0 and "in 2 folds (fold0 10, fold1 10)" in again and "held-out gain -0.400000" in again


@pytest.mark.parametrize("folds, fragment", [
    ("fold0", "10 images of"),  # fold1's images are in none of the folds named
    ("fold0,fold01", "--oof-folds: fold0 and fold01 overlap: both validate on fold 0"),
    ("fold0,fold0", "names a fold twice"),
    ("fold0,x", "'x' is not a fold name"),
])
def test_bad_oof_folds_are_one_line(tmp_path, run_score, folds, fragment):
    q, truth, _ = overfitting_case()
    masks = np.zeros((100, S, S), bool)
    ids = tiny_dataset(tmp_path / "data", masks)
    npz = P.save(tmp_path / "oof.npz", ids[:20], q, split="valid")
    code, _, err = run_score(["--search", npz, "--truth", tmp_path / "data" / "train.csv", "--oof-folds", folds])
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def wall(a, b):
    m = np.zeros((S, S), bool)
    m[:, a:b] = True
    return m


def mosaic_case(tmp_path):
    """20 train tiles (fold k = rows 2k, 2k+1), predicted perfectly except W, X and Y (predicted empty, truly walls).

    mosaic 0: A (r02, fold1, empty) / V (r00, fold0, a wall below its top rows) / W (r01, fold0, wall): W's wall
    continues V's, but V is in W's own fold, so it is not known while fold0 is evaluated: an honest search leaves W
    alone (V is only softly vertical, so nothing goes up into A either).
    mosaic 1: B (r04, fold2, wall) / X (r06, fold3) / a test tile; mosaic 2: C (r08, fold4, wall) / Y (r10, fold5):
    X and Y continue known walls of other folds."""
    rng = np.random.default_rng(0)
    masks = np.zeros((20, S, S), bool)
    for i in range(20):
        if i % 3:
            masks[i, 30:60, 20:50] = True  # a block (no hole, not touching the bottom)
    for i in (0, 1, 4, 6, 8, 10):
        masks[i] = wall(40, 70)
    masks[2] = False
    masks[0, :10] = False
    ids = tiny_dataset(tmp_path / "data", masks, ["s0"])
    layout = Mosaics(["r02", "r00", "r01", "r04", "r06", "s0", "r08", "r10"], [0, 0, 0, 1, 1, 1, 2, 2],
                     [0, 1, 2, 0, 1, 2, 0, 1], [0] * 8)
    layout.write(tmp_path / "mosaics.csv")
    probs = masks.astype(np.float32) * 0.9
    probs[[1, 6, 10]] = 0.0  # W, X, Y missed
    npz = P.save(tmp_path / "oof.npz", ids, probs + 0.001 * rng.random(probs.shape, dtype=np.float32), split="valid")
    return npz, tmp_path / "data" / "train.csv", tmp_path / "mosaics.csv"


def test_rules_are_searched_with_each_fold_unknown(tmp_path, run_score):
    npz, truth, mosaics = mosaic_case(tmp_path)
    code, out, err = run_score(["--search", npz, "--truth", truth, "--mosaics", mosaics,
                                "--save-best", tmp_path / "post.json"])
    assert code == 0, err
    assert value(out, "default") == pytest.approx(17 / 20)
    # vertical fixes X and Y (+2 of 20 images), never W: V's mask is its own fold's
    rows = {m.group(1): (int(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^  (\S+)\s+(\d+)\s+([+-][0-9.]+)$", out, re.M)}
    assert rows["vertical"] == (2, pytest.approx(0.1)) and rows["boundary"] == (2, pytest.approx(0.1))
    assert rows["empty-below"] == (0, 0.0) and rows["fill-holes"] == (0, 0.0)
    # A, V, B, X, C and Y have a neighbour in another fold; W's only neighbour V is in its own
    assert "6 of 20 out-of-fold tiles (30.0%) are next to a known train tile" in out
    assert "at test time 1 of 1 test tiles (100.0%) are" in out  # s0, below X
    # nested: fold3 (X) takes the rules of the others (Y's fold makes vertical win there), and so does fold5
    assert re.search(r"best rules: vertical: in-sample gain \+0\.100000, held-out gain \+0\.100000", out)
    # two tiles fixed are no evidence: a sign-flip test over them cannot go below 1/4, so no rule is kept
    assert "kept: none (their held-out gain is not credible: paired sign-flip test over 20 images (2 changed): " \
           "p = 0.2500, not below 0.05)" in out
    assert "test.py flags (no mosaic rule kept): --threshold 0.5 --min-area 0 --gate none" in out
    saved, info = postprocess.load_setting(tmp_path / "post.json")
    assert saved.rules == () and info.mosaics == str(mosaics)
    assert info.rules_held_out_gain == 0.1 and info.rule_changes["vertical"] == postprocess.RuleChange(2, 0.1)
    assert info.score == info.default_score and not info.credibility["mosaic rules"].credible
    assert info.rules_why == info.credibility["mosaic rules"].why and "p = 0.2500" in info.rules_why


def walls_case(tmp_path, lower: str):
    """60 train tiles (fold k = rows 6k .. 6k+5) in 30 mosaics of two: a wall (rows 0..29, predicted right) above a
    tile of the fold five further (rows 30..59), of the kind ``lower[i]``: ``h`` a wall predicted empty (the vertical
    rule fixes it: +1), ``w`` an empty tile predicted empty (the rule draws a wall into it: -1), ``r`` a wall
    predicted right (no change)."""
    kinds = np.array(list(lower))
    masks = np.zeros((60, S, S), bool)
    masks[:30] = wall(40, 70)
    masks[30:][kinds != "w"] = wall(40, 70)
    ids = tiny_dataset(tmp_path / "data", masks)
    layout = Mosaics(ids, np.tile(np.arange(30), 2), np.repeat([0, 1], 30), np.zeros(60, int))
    layout.write(tmp_path / "mosaics.csv")
    probs = masks.astype(np.float32) * 0.9
    probs[30:][kinds != "r"] = 0.0
    npz = P.save(tmp_path / "oof.npz", ids, probs, split="valid")
    return npz, tmp_path / "data" / "train.csv", tmp_path / "mosaics.csv"


def test_rules_whose_held_out_gain_is_credible_are_kept(tmp_path, run_score):
    npz, truth, mosaics = walls_case(tmp_path, "hhhhrr" * 5)  # 20 of 60 tiles fixed by the rule, none hurt
    code, out, err = run_score(["--search", npz, "--truth", truth, "--mosaics", mosaics,
                                "--save-best", tmp_path / "post.json"])
    assert code == 0, err
    assert re.search(r"best rules: vertical: in-sample gain \+0\.333333, held-out gain \+0\.333333", out)
    assert "kept: vertical (their held-out gain is credible: gain +0.333333 >= the minimum 0.001" in out
    assert "(20 changed): p = 0.0001 < 0.05" in out
    saved, info = postprocess.load_setting(tmp_path / "post.json")
    assert saved.rules == ("vertical",) and info.credibility["mosaic rules"].credible
    assert info.score == pytest.approx(info.default_score + 20 / 60, abs=1e-6)


def test_rules_that_help_and_hurt_alike_are_not_kept(tmp_path, run_score):
    """In every fold 3 tiles fixed and 2 broken: a held-out gain above zero in every fold where the rule does
    anything, yet 15 tiles helped against 10 hurt is what a coin gives one time in five."""
    npz, truth, mosaics = walls_case(tmp_path, "hhhwwr" * 5)
    code, out, err = run_score(["--search", npz, "--truth", truth, "--mosaics", mosaics])
    assert code == 0, err
    gain = float(re.search(r"best rules: vertical: in-sample gain \+[0-9.]+, held-out gain ([+-][0-9.]+)", out)
                 .group(1))
    assert gain > 0.001 and "kept: none (their held-out gain is not credible:" in out
    assert gain == pytest.approx(5 / 60, abs=1e-6) and re.search(r"\(25 changed\): p = 0\.2", out)


def test_a_rule_that_helps_one_fold_only_is_not_kept(tmp_path, run_score):
    npz, truth, mosaics = mosaic_case(tmp_path)
    loaded = P.load(npz)
    probs = loaded.probs.copy()
    probs[10] = 0.9 * wall(40, 70)  # Y predicted right: the rules help fold3 (X) only
    P.save(npz, loaded.ids, probs, split="valid")
    code, out, err = run_score(["--search", npz, "--truth", truth, "--mosaics", mosaics])
    assert code == 0, err
    assert "in-sample gain +0.050000, held-out gain +0.000000" in out and "kept: none" in out
    assert "test.py flags (no mosaic rule kept): --threshold 0.5 --min-area 0 --gate none" in out
    assert "--mosaics" not in out.split("no mosaic rule kept")[1].splitlines()[0]


@pytest.mark.parametrize("case", ["unknown ids", "another dataset", "two ids one cell"])
def test_a_bad_mosaics_file_is_one_line(tmp_path, run_score, case):
    npz, truth, mosaics = mosaic_case(tmp_path)
    rows = {"unknown ids": "r00,0,0,0\nr01,0,1,0\nzzz,0,2,0\n",
            "another dataset": "".join(f"{i:010x},0,0,{i}\n" for i in range(5)) + "r00,0,1,0\n",
            "two ids one cell": "r00,0,0,0\nr01,0,0,0\n"}[case]
    mosaics.write_text("id,mosaic,row,col\n" + rows)
    code, out, err = run_score(["--search", npz, "--truth", truth, "--mosaics", mosaics])
    expected = {"unknown ids": "1 of its 3 ids are not in this dataset's train or test ids: zzz",
                "another dataset": "belongs to another dataset", "two ids one cell": "are both at mosaic 0"}[case]
    assert code == 2 and expected in err and str(mosaics) in err and err.count("\n") == 1 and out == ""
    code, _, err = run_score([tmp_path / "x.csv", "--truth", truth, "--mosaics", mosaics])
    assert code == 2 and "--mosaics goes with --search" in err
