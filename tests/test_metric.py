"""Competition metric: hand-computed cases, thresholds hit exactly, and properties."""
import numpy as np
import pytest

from tgs import metric


def mask_with(area: int, offset: int = 0, shape=(101, 101)) -> np.ndarray:
    """A mask whose first ``area`` pixels (row-major) from ``offset`` are set."""
    m = np.zeros(shape[0] * shape[1], bool)
    m[offset:offset + area] = True
    return m.reshape(shape)


def pair(inter: int, union: int):
    """Prediction and truth with exactly this intersection and union (truth area = inter)."""
    truth = mask_with(inter)
    pred = mask_with(union)  # pred contains truth: I = inter, U = union
    return pred, truth


@pytest.mark.parametrize("inter,union,expected", [
    (10, 20, 0.0),    # IoU 0.50 exactly: not > 0.50
    (11, 20, 0.1),    # IoU 0.55 exactly: only > 0.50
    (3, 4, 0.5),      # IoU 0.75: > 0.50, 0.55, 0.60, 0.65, 0.70
    (19, 20, 0.9),    # IoU 0.95 exactly: all but 0.95
    (20, 20, 1.0),
    (96, 100, 1.0),   # IoU 0.96
    (51, 100, 0.1),   # IoU 0.51
    (1, 3, 0.0),
])
def test_hand_computed_iou_cases(inter, union, expected):
    pred, truth = pair(inter, union)
    assert metric.iou(pred, truth)[0] == pytest.approx(inter / union)
    assert metric.score(pred[None], truth[None]) == pytest.approx(expected)


def test_empty_cases():
    empty = np.zeros((101, 101), bool)
    some = mask_with(50)
    assert metric.score(empty[None], empty[None]) == 1.0  # empty truth, empty prediction
    assert metric.score(some[None], empty[None]) == 0.0  # false positive
    assert metric.score(empty[None], some[None]) == 0.0  # missed salt


def test_mean_over_images():
    p1, t1 = pair(3, 4)      # 0.5
    p2, t2 = pair(11, 20)    # 0.1
    e = np.zeros((101, 101), bool)
    pred = np.stack([p1, p2, e])
    truth = np.stack([t1, t2, e])
    assert metric.score(pred, truth) == pytest.approx((0.5 + 0.1 + 1.0) / 3)
    np.testing.assert_allclose(metric.image_scores(pred, truth), [0.5, 0.1, 1.0])


def test_all_empty_prediction_scores_fraction_of_empty_truths():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 101, 101)) < 0.3
    empty_rows = rng.random(200) < 0.37
    truth[empty_rows] = False
    pred = np.zeros_like(truth)
    assert metric.score(pred, truth) == pytest.approx(empty_rows.mean(), abs=0)


def test_all_full_prediction():
    # IoU of a full prediction equals the truth's coverage; hand-count thresholds passed.
    cover = [10201, 5101, 9690, 0]  # coverage 1.0, 0.50005, 0.94991, empty truth
    truth = np.stack([mask_with(a) for a in cover])
    pred = np.ones_like(truth)
    expected = [1.0, 0.1, 0.9, 0.0]
    np.testing.assert_allclose(metric.image_scores(pred, truth), expected)


def test_per_threshold_and_report():
    p1, t1 = pair(3, 4)
    e = np.zeros((101, 101), bool)
    rep = metric.report(np.stack([p1, e, e]), np.stack([t1, e, mask_with(5)]))
    assert rep.count == 3 and rep.empty_count == 1
    assert rep.empty_score == 1.0 and rep.nonempty_score == pytest.approx(0.25)
    # IoU 0.75 image passes the first five thresholds; the empty pair passes all; the missed one none
    np.testing.assert_allclose(rep.per_threshold, [2 / 3] * 5 + [1 / 3] * 5)
    assert rep.score == pytest.approx(rep.per_threshold.mean())
    assert "score         0.500000" in rep.lines()[0]


def test_evaluator_in_batches_equals_whole():
    rng = np.random.default_rng(1)
    truth = rng.random((50, 101, 101)) < rng.random((50, 1, 1))
    truth[::3] = False
    pred = truth ^ (rng.random(truth.shape) < 0.05)
    ev = metric.SaltEvaluator()
    for s in range(0, 50, 7):
        ev.process(pred[s:s + 7], truth[s:s + 7])
    rep = ev.evaluate()
    assert rep.score == pytest.approx(metric.score(pred, truth))
    np.testing.assert_array_equal(rep.per_image, metric.image_scores(pred, truth))
    ev.reset()
    assert ev.evaluate().count == 0


def test_matches_official_object_formulation():
    """Kaggle's definition with TP/FP/FN per threshold, one object per image, written as a loop here."""
    rng = np.random.default_rng(2)
    truth = rng.random((40, 20, 20)) < rng.random((40, 1, 1))
    truth[::5] = False
    pred = truth ^ (rng.random(truth.shape) < rng.random((40, 1, 1)) * 0.5)
    pred[::7] = False

    def official(p, t):
        scores = []
        for thr in np.arange(0.5, 1.0, 0.05):
            if not t.any() and not p.any():
                scores.append(1.0)
                continue
            inter, union = (p & t).sum(), (p | t).sum()
            iou = inter / union
            tp = int(t.any() and p.any() and iou > thr + 1e-12)
            fp = int(p.any()) - tp
            fn = int(t.any()) - tp
            scores.append(tp / (tp + fp + fn))
        return np.mean(scores)

    expected = np.mean([official(p, t) for p, t in zip(pred, truth)])
    assert metric.score(pred, truth) == pytest.approx(expected)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metric.score(np.zeros((2, 101, 101)), np.zeros((3, 101, 101)))
