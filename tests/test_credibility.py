"""tgs/credibility.py and the searches that use it: a held-out gain is kept only when it is credible.

The cases are built so that the truth is known: a real effect (the change helps more images than it hurts, by
construction) or pure noise (each image's change is a fair coin's sign), and the figures of the real demo's search
(aggregates of the issue: the full grid +0.00725 / -0.0065 in the two folds; the mosaic rules +0.0058 / +0.0075)."""
import numpy as np
import pytest

from tgs import credibility as C
from tgs import probabilities as P
from tgs import search as searching
from tgs.postprocess import DEFAULTS


def test_the_sign_flip_p_value_by_hand_and_as_scipy_counts_it():
    assert C.sign_flip_p([]) == 1.0 and C.sign_flip_p([0, 0]) == 1.0  # nothing changed
    assert C.sign_flip_p([1, 1]) == 0.25  # 4 sign patterns, 1 with a sum >= 2
    assert C.sign_flip_p([1, -1, 0]) == 0.75  # sums 2, 0, 0, -2: three are >= 0
    assert C.sign_flip_p([0.5] * 12) == pytest.approx(2.0 ** -12)  # exact: 4096 patterns, the all-plus one
    assert C.sign_flip_p([-1] * 5) == 1.0
    from scipy import stats

    d = np.array([0.3, -0.1, 0.7, 0.2, -0.4, 0.9, 0.1, -0.2, 0.5])  # few enough for both to enumerate every pattern
    exact = stats.permutation_test((d,), np.sum, permutation_type="samples", alternative="greater").pvalue
    assert C.sign_flip_p(d) == pytest.approx(exact)


def fold_diffs(per_fold, n=400):
    """Per-image differences: in each fold of ``n`` images, ``(helped, hurt, size)``: that many images change by
    +size and -size, the rest not at all."""
    diffs, groups = [], []
    for k, (helped, hurt, size) in enumerate(per_fold):
        d = np.zeros(n)
        d[:helped], d[helped:helped + hurt] = size, -size
        diffs.append(d)
        groups.append(np.full(n, k))
    return np.concatenate(diffs), np.concatenate(groups)


def test_the_demo_grid_is_noise_and_the_demo_rules_are_not():
    # the full grid on the real demo: +0.00725 on fold0, -0.0065 on fold1 (400 images each): +0.000375 nested
    d, g = fold_diffs([(40, 11, 0.1), (27, 53, 0.1)])
    v = C.judge(d, g)
    assert v.fold_gains == pytest.approx((0.00725, -0.0065)) and v.gain == pytest.approx(0.000375)
    assert not v.credible and "below the minimum 0.001" in v.why and "the folds disagree" in v.why
    assert v.why.startswith("not credible") and "p = " in v.why
    # the mosaic rules on the same run: +0.0058 and +0.0075 (+0.0066 nested), a few dozen tiles changed per fold
    d, g = fold_diffs([(20, 3, 0.1352), (25, 3, 0.1364)])
    v = C.judge(d, g)
    assert v.fold_gains == pytest.approx((0.0058, 0.0075), abs=1e-4) and v.gain == pytest.approx(0.0066, abs=1e-4)
    assert v.credible and v.p_value <= 1e-3 and v.why.startswith("credible")
    assert v.changed == 51 and v.images == 800


def test_a_gain_positive_in_both_folds_may_still_be_a_coin():
    d, g = fold_diffs([(52, 48, 1.0), (51, 49, 1.0)])  # +4 and +2 of 100 coin flips per fold
    v = C.judge(d, g)
    assert v.gain == pytest.approx(6 / 800) and min(v.fold_gains) > 0 and v.gain > v.spread
    assert not v.credible and v.p_value > 0.2 and "not below 0.05" in v.why and "minimum" not in v.why
    d, g = fold_diffs([(70, 30, 1.0), (65, 35, 1.0)])  # the same number of changes, most of them for the better
    assert C.judge(d, g).credible


def test_keep_rate_under_noise_and_under_a_real_effect():
    """Many draws: each image's change is +-1 with a fair coin (noise) or +1 with probability 0.65 (a real effect).
    Keeping on a positive held-out gain keeps noise half the time; the credibility rule at most about ALPHA."""
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 100)
    noise = [rng.choice([-1.0, 1.0], 200) for _ in range(60)]
    effect = [np.where(rng.random(200) < 0.65, 1.0, -1.0) for _ in range(20)]
    positive = sum(d.mean() > 0 for d in noise)
    kept = sum(C.judge(d, groups).credible for d in noise)
    assert positive >= 20 and kept <= 4  # about 30 of 60 positive; 5% of 60 is 3
    assert sum(C.judge(d, groups).credible for d in effect) >= 18


def coin_case(empties, n: int = 100):
    """Folds of ``n`` images, each predicted as one 10 x 10 body: in fold k the truth of the first ``empties[k]``
    images is empty (min area 150 fixes them: +1 each), the others' is that body (min area 150 loses them: -1)."""
    body = np.zeros((101, 101), bool)
    body[20:30, 20:30] = True
    truth = np.zeros((len(empties) * n, 101, 101), bool)
    for k, e in enumerate(empties):
        truth[k * n + e:(k + 1) * n] = body
    q = P.quantize(np.broadcast_to(body * np.float32(0.9), truth.shape))
    return q, truth, np.repeat(np.arange(len(empties)), n)


def min_area_search(empties):
    q, truth, groups = coin_case(empties)
    return searching.honest_search(q, truth, groups=groups, names=[f"fold{k}" for k in range(len(empties))],
                                   thresholds=(0.5,), min_areas=(0, 150), gates=())


def test_the_honest_search_keeps_the_defaults_on_a_coins_margin():
    """52 and 51 false alarms of 100 per fold: min area 150 gains in-sample and held out in both folds (+0.04 and
    +0.02), by the margin of a fair coin. The defaults stay, and the search says which check decided."""
    res = min_area_search((52, 51))
    full = res.families["all"]
    assert [h.gain for h in full.folds] == pytest.approx([0.04, 0.02]) and full.held_out_gain == pytest.approx(0.03)
    assert full.verdict.gain == pytest.approx(full.held_out_gain) and full.verdict.p_value > 0.2
    assert res.chosen == DEFAULTS and res.chosen_family is None
    assert "no search's held-out gain is credible: keeping the defaults" in res.reason
    text = "\n".join(res.lines())
    assert "full search: not credible: paired sign-flip test over 200 images (200 changed)" in text


def test_the_honest_search_keeps_a_real_min_area():
    res = min_area_search((70, 65))  # most of the small bodies are false alarms, in both folds
    assert res.chosen.min_area == 150 and res.chosen_family == "all"
    assert "the full search generalises, credibly (credible:" in res.reason


def test_the_full_grid_over_the_threshold_alone_needs_a_credible_extra_gain():
    """In each fold of 100: 40 large bodies predicted at 0.36 (a lower threshold finds them: +1 each, a real
    effect); 12 (fold0) and 11 (fold1) empty truths with a small false alarm that min area 150 removes (+1 each);
    10 small true bodies predicted right that it loses (-1 each). Min area on top of the threshold gains held out
    in both folds, by a coin's margin: the threshold alone is kept."""
    small = np.zeros((101, 101), bool)
    small[20:30, 20:30] = True
    large = np.zeros((101, 101), bool)
    large[40:80, 40:80] = True
    truth = np.zeros((200, 101, 101), bool)
    probs = np.zeros((200, 101, 101), np.float32)
    for k, alarms in ((0, 12), (1, 11)):
        rows = np.arange(100 * k, 100 * k + 100)
        truth[rows[:40]], probs[rows[:40]] = large, large * np.float32(0.36)
        probs[rows[40:40 + alarms]] = small * np.float32(0.9)
        truth[rows[40 + alarms:50 + alarms]], probs[rows[40 + alarms:50 + alarms]] = small, small * np.float32(0.9)
    res = searching.honest_search(P.quantize(probs), truth, groups=np.repeat([0, 1], 100), names=["fold0", "fold1"],
                                  thresholds=(0.3, 0.5), min_areas=(0, 150), gates=())
    thr, full = res.families["threshold"], res.families["all"]
    assert thr.verdict.credible and full.verdict.credible
    assert full.held_out_gain - thr.held_out_gain == pytest.approx(3 / 200)
    assert res.extra.changed == 43 and not res.extra.credible and res.extra.p_value > 0.2
    assert res.chosen_family == "threshold" and (res.chosen.threshold, res.chosen.min_area) == (0.3, 0)
    assert "the threshold alone generalises at least as well as the full search" in res.reason
