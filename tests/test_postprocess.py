"""tgs/postprocess.py: the post-processing steps by hand, against a per-image reference, and the OOF search."""
import re

import numpy as np
import pytest

from tgs import metric, postprocess
from tgs import probabilities as P
from tgs import search as searching
from tgs.errors import UserError
from tgs.postprocess import PostProcess


def blob(n_pixels_side: int, at=(10, 10), shape=(101, 101)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[at[0]:at[0] + n_pixels_side, at[1]:at[1] + n_pixels_side] = True
    return m


def textured(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 101, 101), dtype=np.uint8)


def test_threshold_is_strict_and_defaults_are_neutral():
    probs = np.zeros((1, 101, 101), np.float32)
    probs[0, 0, :3] = [0.5, 0.5000001, 0.9]
    masks = postprocess.apply(probs, images=textured(1))
    assert masks[0, 0, :3].tolist() == [False, True, True] and masks.sum() == 2
    assert postprocess.DEFAULTS == PostProcess(0.5, 0, None, True)
    # (N, 1, H, W) is accepted as well
    assert np.array_equal(postprocess.apply(probs[:, None]), masks)


def test_min_area_empties_small_predictions_only():
    probs = np.stack([blob(2), blob(3), np.zeros((101, 101))]).astype(np.float32)  # areas 4, 9, 0
    for min_area, kept in [(0, [4, 9, 0]), (4, [4, 9, 0]), (5, [0, 9, 0]), (10, [0, 0, 0])]:
        masks = postprocess.apply(probs, params=PostProcess(min_area=min_area))
        assert masks.reshape(3, -1).sum(axis=1).tolist() == kept, min_area


def test_gating_by_the_image_head():
    probs = np.stack([blob(5)] * 4).astype(np.float32)
    image_probs = np.array([0.1, 0.29, 0.3, np.nan], np.float32)
    gated = postprocess.apply(probs, image_probs, params=PostProcess(gate=0.3))
    assert gated.any(axis=(1, 2)).tolist() == [False, False, True, True]  # NaN: unknown, never gated
    off = postprocess.apply(probs, image_probs, params=PostProcess(gate=None))
    assert off.any(axis=(1, 2)).all()


def test_flat_images_get_empty_masks():
    images = textured(3)
    images[1] = 77  # one value everywhere
    images[2, :50] = 0  # two values: not flat
    probs = np.ones((3, 101, 101), np.float32)
    assert postprocess.flat_images(images).tolist() == [False, True, False]
    masks = postprocess.apply(probs, images=images)
    assert masks.any(axis=(1, 2)).tolist() == [True, False, True]
    kept = postprocess.apply(probs, images=images, params=PostProcess(flat=False))
    assert kept.all()
    assert postprocess.apply(probs).all()  # no images: the rule cannot apply


def post_flags(argv):
    from cli.common import ArgumentParser, add_postprocessing, post_setting

    p = ArgumentParser(prog="t")
    add_postprocessing(p)
    return post_setting(p.parse_args(argv))[0]


def test_the_flags_come_from_the_declarations():
    assert post_flags([]) == postprocess.DEFAULTS
    given = post_flags(["--threshold", "0.4", "--min-area", "7", "--gate", "0.25", "--no-flat"])
    assert given == PostProcess(0.4, 7, 0.25, False)
    assert post_flags(["--gate", "none"]).gate is None and post_flags(["--gate", "off"]).gate is None
    assert post_flags(given.flags().split()) == given  # flags() writes what the flags read
    for argv, fragment in [(["--gate", "x"], "--gate: 'x' is not a number"),
                           (["--threshold", "1"], "--threshold: must be < 1, got 1"),
                           (["--min-area", "2.5"], "--min-area: '2.5' is not an integer"),
                           (["--min-area", "10202"], "--min-area: must be <= 10201, got 10202")]:
        with pytest.raises(UserError, match=re.escape(fragment)):
            post_flags(argv)


def test_bad_settings_are_user_errors():
    for kwargs, fragment in [(dict(threshold=1.5), "--threshold"), (dict(min_area=-1), "--min-area"),
                             (dict(gate=2.0), "--gate")]:
        with pytest.raises(UserError, match=fragment):
            PostProcess(**kwargs)


def reference(probs, image_probs, images, p: PostProcess) -> np.ndarray:
    """The same rules, one image at a time."""
    out = np.zeros(probs.shape, bool)
    for i in range(len(probs)):
        m = probs[i] > p.threshold
        if m.sum() < p.min_area:
            continue
        if p.gate is not None and image_probs[i] < p.gate:
            continue
        if p.flat and images[i].min() == images[i].max():
            continue
        out[i] = m
    return out


def test_batch_equals_per_image_reference():
    rng = np.random.default_rng(1)
    n = 700  # more than one internal block
    probs = rng.random((n, 101, 101), dtype=np.float32) ** 6  # small areas above most thresholds
    image_probs = rng.random(n).astype(np.float32)
    images = textured(n, 2)
    images[::13] = 5
    for p in [PostProcess(), PostProcess(0.3, 200, 0.4, True), PostProcess(0.7, 50, None, False)]:
        np.testing.assert_array_equal(postprocess.apply(probs, image_probs, images, p),
                                      reference(probs, image_probs, images, p))


# -- search ---------------------------------------------------------------------------------------------------------
def planted(n=40, seed=0):
    """Half the images have a salt square (various sizes), half are empty."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 101, 101), bool)
    for i in range(0, n, 2):
        s = int(rng.integers(12, 40))
        truth[i] = blob(s, at=(int(rng.integers(0, 60)), int(rng.integers(0, 60))))
    return truth


def test_search_finds_a_planted_better_threshold():
    truth = planted()
    probs = np.where(truth, 0.36, 0.05).astype(np.float32)  # confident in shape, not in level: 0.5 misses all salt
    res = searching.search(P.quantize(probs), truth)
    assert res.default == postprocess.DEFAULTS
    assert res.default_score == pytest.approx(0.5)  # only the empty truths score
    assert res.best_score == pytest.approx(1.0) and res.gain == pytest.approx(0.5)
    assert 0.05 <= res.best.threshold < 0.36
    lines = "\n".join(res.lines())
    assert "gain     +0.500000" in lines and f"--threshold {res.best.threshold:g}" in lines


def test_search_keeps_the_default_flat_rule_on_a_tie():
    truth = planted()
    probs = np.where(truth, 0.36, 0.05).astype(np.float32)
    no_flat = np.zeros(len(truth), bool)  # no flat image: both rules score the same
    for default in (postprocess.DEFAULTS, PostProcess(flat=False)):
        res = searching.search(P.quantize(probs), truth, flat=no_flat, default=default)
        assert res.best.flat == default.flat
    # a flat image whose prediction is wrong: the rule that empties it wins whatever the default
    flat = no_flat.copy()
    flat[1] = True  # an empty truth
    probs[1] = 0.9
    res = searching.search(P.quantize(probs), truth, flat=flat, default=PostProcess(flat=False))
    assert res.best.flat is True and res.best_score == pytest.approx(1.0)


def test_search_finds_min_area_and_gate():
    truth = planted()
    probs = np.where(truth, 0.9, 0.0).astype(np.float32)
    noisy = probs.copy()
    noisy[1::2, 90:93, 90:93] = 0.9  # 9-pixel false alarms on every empty image
    res = searching.search(P.quantize(noisy), truth)
    assert res.default_score == pytest.approx(0.5)
    assert res.best_score == pytest.approx(1.0) and 9 < res.best.min_area <= 144
    # large false alarms, but the image head knows: only gating fixes them
    noisy[1::2, 50:90, 50:90] = 0.9
    image_probs = np.where(truth.any(axis=(1, 2)), 0.8, 0.2).astype(np.float32)
    res = searching.search(P.quantize(noisy), truth, image_probs)
    assert res.best_score == pytest.approx(1.0) and 0.2 < res.best.gate <= 0.8
    # unknown image probabilities: gating is not searched
    res = searching.search(P.quantize(noisy), truth, np.full(len(truth), np.nan, np.float32))
    assert res.best.gate is None and res.best_score < 1.0


def test_search_scores_equal_apply_then_metric():
    rng = np.random.default_rng(3)
    truth = planted(30, 1)
    noise = rng.normal(0, 0.25, truth.shape)
    q = P.quantize(np.clip(truth * 0.6 + 0.2 + noise, 0, 1))
    probs = q.astype(np.float32) / np.float32(255.0)  # what tgs.probabilities.load gives
    image_probs = rng.random(len(truth)).astype(np.float32)
    images = textured(len(truth), 4)
    images[3] = 9
    truth[3] = False
    flat = postprocess.flat_images(images)
    thresholds, areas, gates = [0.3, 0.5, 0.62], [0, 40, 400], [0.25, 0.6]
    res = searching.search(q, truth, image_probs, flat, thresholds, areas, gates)
    best_direct = -1.0
    for t in thresholds:
        for a in areas:
            for g in [None, *gates]:
                for f in (False, True):
                    p = PostProcess(t, a, g, f)
                    s = metric.score(postprocess.apply(probs, image_probs, images, p), truth)
                    best_direct = max(best_direct, s)
                    if p == res.default:
                        assert res.default_score == pytest.approx(s, abs=1e-12)
    assert res.best_score == pytest.approx(best_direct, abs=1e-12)
    direct = metric.score(postprocess.apply(probs, image_probs, images, res.best), truth)
    assert res.best_score == pytest.approx(direct, abs=1e-12)
    for p, s in res.table:
        assert s == pytest.approx(metric.score(postprocess.apply(probs, image_probs, images, p), truth), abs=1e-12)


# -- mosaic rules in the setting ----------------------------------------------------------------------------------
def test_rules_ride_in_the_setting_and_its_file(tmp_path):
    p = PostProcess(threshold=0.4, rules=("fill-holes", "vertical"))
    assert p.rules == ("vertical", "fill-holes") and p != PostProcess(threshold=0.4)
    assert "mosaic rules vertical, fill-holes" in p.describe()
    assert p.flags().endswith("--mosaic-rules vertical,fill-holes")
    assert PostProcess().flags() == "--threshold 0.5 --min-area 0 --gate none"
    postprocess.save_setting(tmp_path / "on.json", p, {"score": 0.8})
    back, info = postprocess.load_setting(tmp_path / "on.json")
    assert back == p and info == postprocess.Record(p, score=0.8)
    postprocess.save_setting(tmp_path / "off.json", PostProcess(threshold=0.4))
    assert postprocess.load_setting(tmp_path / "off.json")[0].rules == ()
    # a file written before the rules existed has none
    (tmp_path / "old.json").write_text('{"threshold": 0.4, "min_area": 0, "gate": null, "flat": true}')
    assert postprocess.load_setting(tmp_path / "old.json")[0] == PostProcess(threshold=0.4)
    # apply() ignores them (they are a separate step that needs a layout)
    probs = np.random.default_rng(0).random((3, 101, 101)).astype(np.float32)
    assert np.array_equal(postprocess.apply(probs, params=p), postprocess.apply(probs, params=PostProcess(0.4)))
    # the command line replaces them like any field
    assert postprocess.resolve(tmp_path / "on.json", {"rules": ()})[0].rules == ()


@pytest.mark.parametrize("rules, fragment", [('["vertical", "sideways"]', "rules: unknown mosaic rule 'sideways'"),
                                             ('"vertical"', "rules = 'vertical' is not a valid value"),
                                             ('[1]', "rules = [1] is not a valid value")])
def test_bad_rules_in_a_file_are_one_line(tmp_path, rules, fragment):
    path = tmp_path / "post.json"
    path.write_text(f'{{"threshold": 0.5, "min_area": 0, "gate": null, "flat": true, "rules": {rules}}}')
    with pytest.raises(UserError) as err:
        postprocess.load_setting(path)
    assert fragment in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="unknown mosaic rule 'x'"):
        PostProcess(rules=("x",))


# -- the honest search ----------------------------------------------------------------------------------------------
def overfitting_case():
    """Fold 0: ten empty truths with a 100-pixel false alarm each (a min area above 100 fixes them); fold 1: eight
    true 100-pixel bodies predicted exactly (the same min area wipes them out) and two perfect empty images."""
    truth = np.zeros((20, 101, 101), bool)
    pred = np.zeros((20, 101, 101), bool)
    pred[:10] = blob(10)  # fold 0: false alarms
    truth[10:18] = blob(10)  # fold 1: small true bodies
    pred[10:18] = blob(10)
    groups = np.repeat([0, 1], 10)
    return P.quantize(pred.astype(np.float32) * 0.9), truth, groups


def test_the_nested_search_exposes_an_overfitting_min_area():
    q, truth, groups = overfitting_case()
    res = searching.honest_search(q, truth, groups=groups, names=["fold0", "fold1"])
    r = res.result
    # in-sample, a min area above 100 wins: +10 fixed, -8 lost of 20 images
    assert r.default_score == pytest.approx(0.5) and r.best_score == pytest.approx(0.6) and r.best.min_area > 100
    full = res.families["all"]
    assert full.in_sample_gain == pytest.approx(0.1)
    # nested: fold 0 gets the setting of fold 1 (the default: nothing to gain there), fold 1 the setting of fold 0
    f0, f1 = full.folds
    assert (f0.name, f0.count, f0.setting, f0.gain) == ("fold0", 10, postprocess.DEFAULTS, 0.0)
    assert f1.setting.min_area > 100 and f1.gain == pytest.approx(-0.8)
    assert full.held_out_gain == pytest.approx(-0.4)  # (0 * 10 - 0.8 * 10) / 20
    assert res.chosen == postprocess.DEFAULTS and res.chosen_score == pytest.approx(0.5)
    assert "keeping the defaults" in res.reason
    # empty masks: the truth 12 of 20, the default 2 (the two perfect empty images), the in-sample best all of them
    assert res.truth_empty == pytest.approx(0.6)
    assert res.empty == {"default": 0.1, "best": 1.0, "chosen": 0.1}
    text = "\n".join(res.lines())
    assert "held-out gain -0.400000" in text and "gain     +0.100000" in text
    assert "empty masks 100.0%" in text and "(true masks 60.0%)" in text
    assert f"test.py flags: {postprocess.DEFAULTS.flags()}" in text


def test_the_nested_search_keeps_a_setting_that_generalises_and_its_scores_are_exact():
    truth = planted(40, 2)
    probs = np.where(truth, 0.36, 0.05).astype(np.float32)  # the threshold must drop below 0.36 in every fold
    groups = np.arange(40) % 4
    q = P.quantize(probs)
    res = searching.honest_search(q, truth, groups=groups, names=[f"fold{k}" for k in range(4)])
    thr, full = res.families["threshold"], res.families["all"]
    assert thr.held_out_gain == pytest.approx(0.5) and full.held_out_gain == pytest.approx(0.5)
    assert res.chosen.threshold < 0.36 and (res.chosen.min_area, res.chosen.gate) == (0, None)
    assert "threshold alone" in res.reason  # a tie: the smaller change
    loaded = q.astype(np.float32) / np.float32(255)
    for k, h in enumerate(full.folds):  # each fold: chosen on the others (as search() finds it), scored on it
        rest, here = groups != k, groups == k
        assert h.setting == searching.search(q[rest], truth[rest]).best
        assert h.score == pytest.approx(metric.score(postprocess.apply(loaded[here], params=h.setting), truth[here]),
                                        abs=1e-12)


def test_each_fold_gets_the_setting_chosen_without_its_truth():
    truth = planted(40, 2)
    groups = np.arange(40) % 4
    q = P.quantize(np.where(truth, 0.36, 0.05).astype(np.float32))
    res = searching.honest_search(q, truth, groups=groups, names=[f"fold{k}" for k in range(4)])
    assert res.chosen_family == "threshold"
    settings = res.held_out_settings()
    assert [sel.tolist() for sel, _ in settings] == [(groups == k).tolist() for k in range(4)]
    for k, (_, setting) in enumerate(settings):  # the threshold family's choice on the other three folds
        rest = groups != k
        assert setting == searching.search(q[rest], truth[rest], min_areas=(0,), gates=(None,)).best
    q, truth, groups = overfitting_case()  # the defaults chosen: every fold keeps them
    res = searching.honest_search(q, truth, groups=groups, names=["fold0", "fold1"])
    assert res.chosen_family is None
    assert [s for _, s in res.held_out_settings()] == [postprocess.DEFAULTS] * 2


def test_one_fold_is_split_in_halves_for_the_estimate():
    q, truth, _ = overfitting_case()
    res = searching.honest_search(q, truth)
    assert res.names == ["first half", "second half"] and res.counts == [10, 10]
    assert any("two halves" in n for n in res.notes)


# -- the post-config file: a typed record, read strictly -------------------------------------------------------------
# a file as score.py --search --save-best wrote it before the credibility checks (with --mosaics): still read
WRITTEN_BEFORE = """{"threshold": 0.5, "min_area": 0, "gate": null, "flat": true, "rules": ["vertical"], "score": 0.95,
 "default_score": 0.85, "images": 20, "searched_on": "oof.npz",
 "in_sample_best": {"threshold": 0.5, "min_area": 0, "gate": null, "flat": true, "rules": []},
 "in_sample_gain": 0.0, "held_out_gain": null, "threshold_held_out_gain": 0.0, "chosen_held_out_gain": 0.0,
 "why": "no search generalises", "folds": {"fold0": 10, "fold1": 10}, "empty_share": 0.4, "true_empty_share": 0.3,
 "mosaics": "m.csv", "rules_in_sample_gain": 0.1, "rules_held_out_gain": 0.1,
 "rule_changes": {"vertical": {"tiles": 2, "score_change": 0.1}}, "rules_by_fold": {"fold0": [], "fold1": ["vertical"]}}
"""


def test_a_record_written_before_reads_back_typed(tmp_path):
    path = tmp_path / "post.json"
    path.write_text(WRITTEN_BEFORE)
    setting, record = postprocess.load_setting(path)
    assert setting == PostProcess(rules=("vertical",)) and record.setting == setting
    assert record.in_sample_best == PostProcess() and record.held_out_gain is None and record.images == 20
    assert record.rule_changes == {"vertical": postprocess.RuleChange(2, 0.1)}
    assert record.rules_by_fold == {"fold0": (), "fold1": ("vertical",)} and record.credibility is None
    # what it writes back reads back the same
    postprocess.save_setting(tmp_path / "again.json", setting, record)
    assert postprocess.load_setting(tmp_path / "again.json")[1] == record


def test_a_record_with_verdicts_round_trips(tmp_path):
    from tgs.credibility import Verdict

    v = Verdict(0.0066, (0.0058, 0.0075), 0.00085, 0.0001, 800, 51, True, "credible: ...")
    record = postprocess.Record(PostProcess(0.4), score=0.8, credibility={"mosaic rules": v}, rules_why=v.why)
    postprocess.save_setting(tmp_path / "p.json", record.setting, record)
    assert postprocess.load_setting(tmp_path / "p.json")[1] == record


@pytest.mark.parametrize("change, fragment", [
    ('"scroe": 0.8', "unknown key 'scroe' (did you mean score?)"),
    ('"colour": "red"', "unknown key 'colour' (a post-config file holds threshold, min_area, gate, flat, rules"),
    ('"images": 2.5', "images = 2.5 is not a valid value (a whole number)"),
    ('"held_out_gain": "big"', "held_out_gain = 'big' is not a valid value (a number or null)"),
    ('"folds": [10, 10]', "folds = [10, 10] is not a valid value (an object of images per fold)"),
    ('"rules_by_fold": {"fold0": ["sideways"]}', "rules_by_fold: unknown mosaic rule 'sideways'"),
    ('"rule_changes": {"vertical": {"tiles": 2}}', 'rule_changes = {'),
    ('"in_sample_best": {"threshold": 0.5}', "in_sample_best: missing min_area, gate, flat"),
    ('"credibility": {"all": {"gain": 0.1}}', "credibility = {"),
])
def test_a_bad_record_is_one_line(tmp_path, change, fragment):
    path = tmp_path / "post.json"
    path.write_text('{"threshold": 0.5, "min_area": 0, "gate": null, "flat": true, ' + change + "}")
    with pytest.raises(UserError) as err:
        postprocess.load_setting(path)
    assert fragment in str(err.value) and f"--post-config {path}" in str(err.value) and "\n" not in str(err.value)
