"""tgs/mosaic_rules.py: each rule on hand-built grids of a few tiles, against masks worked out by hand."""
import numpy as np
import pytest

from tgs import mosaic_rules as R
from tgs.errors import UserError
from tgs.mosaic import Mosaics

S = 101


def stripes(*spans) -> np.ndarray:
    """A mask whose columns in the half-open ``spans`` are salt on every row (a vertical salt wall)."""
    m = np.zeros((S, S), bool)
    for a, b in spans:
        m[:, a:b] = True
    return m


def column(n: int, rows=None) -> Mosaics:
    """Tiles t0 .. t{n-1} down one column of mosaic 0 (at ``rows``, default 0 .. n-1)."""
    return Mosaics([f"t{i}" for i in range(n)], [0] * n, list(range(n)) if rows is None else rows, [0] * n)


def noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, S, S)) < 0.5


def run(layout, predicted: dict, known: dict, rules):
    ids = list(predicted)
    out = R.apply_rules(np.stack([predicted[i] for i in ids]), ids, layout, list(known),
                        np.stack([known[i] for i in known]) if known else np.zeros((0, S, S), bool), rules)
    return {i: out.masks[k] for k, i in enumerate(ids)}, {r: [i for k, i in enumerate(ids) if c[k]]
                                                          for r, c in out.changed.items()}


# -- vertical ----------------------------------------------------------------------------------------------------
def test_a_vertical_train_mask_continues_down_to_the_next_train_tile():
    wall = stripes((30, 60))
    pred = noise(3)
    # t0 train (vertical), t1 t2 test, t3 train (empty: not vertical), t4 test
    masks, changed = run(column(5), {"t1": pred[0], "t2": pred[1], "t4": pred[2]},
                         {"t0": wall, "t3": np.zeros((S, S), bool)}, ["vertical"])
    assert np.array_equal(masks["t1"], wall) and np.array_equal(masks["t2"], wall)
    assert np.array_equal(masks["t4"], pred[2])  # the walk stopped at the train tile t3
    assert changed == {"vertical": ["t1", "t2"]}


def test_a_known_tile_is_never_changed_and_stops_the_walk():
    wall = stripes((10, 20))
    own = noise(1, 3)[0]
    # t1 is both predicted and known: it keeps its prediction, and the walk from t0 stops there
    masks, changed = run(column(3), {"t1": own, "t2": np.zeros((S, S), bool)}, {"t0": wall, "t1": stripes((0, 5))},
                         ["vertical", "empty-below", "boundary", "fill-holes"])
    assert np.array_equal(masks["t1"], own)
    assert np.array_equal(masks["t2"], stripes((0, 5)))  # t1's own wall goes on down instead
    assert "t1" not in sum(changed.values(), [])


def test_softly_vertical_needs_its_last_rows_equal():
    base = noise(1, 1)[0]
    soft = base.copy()
    soft[-R.VERTICAL_ROWS:] = stripes((40, 70))[0]  # the last VERTICAL_ROWS rows equal, partly salt
    masks, _ = run(column(2), {"t1": np.zeros((S, S), bool)}, {"t0": soft}, ["vertical"])
    expected = np.zeros((S, S), bool)
    expected[:, 40:70] = True
    assert np.array_equal(masks["t1"], expected)
    short = base.copy()
    short[-(R.VERTICAL_ROWS - 1):] = stripes((40, 70))[0]  # one row fewer: the row above differs
    short[-R.VERTICAL_ROWS] = ~short[-1]
    masks, changed = run(column(2), {"t1": np.zeros((S, S), bool)}, {"t0": short}, ["vertical"])
    assert not masks["t1"].any() and changed == {"vertical": []}


def test_a_vertical_mask_of_all_or_no_salt_is_not_a_wall():
    for known in (np.ones((S, S), bool), np.zeros((S, S), bool)):
        pred = noise(1, 2)[0]
        masks, _ = run(column(2), {"t1": pred}, {"t0": known}, ["vertical"])
        assert np.array_equal(masks["t1"], pred)


def test_the_tile_above_a_vertical_tile_gets_its_first_row():
    wall = stripes((5, 25), (70, 80))
    masks, changed = run(column(3), {"t0": np.zeros((S, S), bool), "t1": noise(1)[0]}, {"t2": wall}, ["vertical"])
    assert np.array_equal(masks["t1"], wall) and not masks["t0"].any()  # only the tile just above
    assert changed == {"vertical": ["t1"]}
    soft = wall.copy()
    soft[:10] = False  # softly vertical only: nothing goes up
    masks, _ = run(column(2), {"t0": np.zeros((S, S), bool)}, {"t1": soft}, ["vertical"])
    assert not masks["t0"].any()
    # between two walls: the one from above wins
    masks, _ = run(column(3), {"t1": np.zeros((S, S), bool)}, {"t0": stripes((0, 10)), "t2": wall}, ["vertical"])
    assert np.array_equal(masks["t1"], stripes((0, 10)))


def test_an_empty_cell_stops_the_walk_and_unpredicted_tiles_are_walked_through():
    wall = stripes((50, 90))
    gap = Mosaics(["t0", "t2"], [0, 0], [0, 2], [0, 0])  # no tile in row 1
    masks, _ = run(gap, {"t2": np.zeros((S, S), bool)}, {"t0": wall}, ["vertical", "empty-below"])
    assert not masks["t2"].any()
    # t1 is in the layout but neither known nor predicted (a test tile during out-of-fold evaluation)
    masks, changed = run(column(3), {"t2": np.zeros((S, S), bool)}, {"t0": wall}, ["vertical"])
    assert np.array_equal(masks["t2"], wall) and changed == {"vertical": ["t2"]}


def test_walks_stay_in_their_column_and_mosaic():
    # mosaic 0: t0 t1 / t2 t3 ; mosaic 1: t4 below nothing; t0 is a wall
    layout = Mosaics(["t0", "t1", "t2", "t3", "t4"], [0, 0, 0, 0, 1], [0, 0, 1, 1, 1], [0, 1, 0, 1, 0])
    z = np.zeros((S, S), bool)
    masks, changed = run(layout, {"t1": z, "t2": z, "t3": z, "t4": z}, {"t0": stripes((0, 50))}, ["vertical"])
    assert changed == {"vertical": ["t2"]} and not masks["t3"].any() and not masks["t4"].any()


# -- empty below -------------------------------------------------------------------------------------------------
def test_below_a_bottom_row_of_salt_the_tiles_become_empty():
    full_bottom = np.zeros((S, S), bool)
    full_bottom[60:] = True
    salty = np.ones((3, S, S), bool)
    masks, changed = run(column(5), {"t1": salty[0], "t2": salty[1], "t4": salty[2]},
                         {"t0": full_bottom, "t3": np.zeros((S, S), bool)}, ["empty-below"])
    assert not masks["t1"].any() and not masks["t2"].any() and masks["t4"].all()
    assert changed == {"empty-below": ["t1", "t2"]}
    # a bottom row with one background pixel is not all salt
    full_bottom[-1, 7] = False
    masks, _ = run(column(2), {"t1": salty[0]}, {"t0": full_bottom}, ["empty-below"])
    assert masks["t1"].all()


def test_a_tile_set_by_an_earlier_rule_is_left_to_it():
    ring = np.zeros((S, S), bool)
    ring[20:40, 20:40] = True
    ring[25:35, 25:35] = False
    # t1 below a wall: vertical sets it, so fill-holes does not touch it; t2 (below t1, not known) is vertical's too
    masks, changed = run(column(3), {"t1": ring, "t2": ring}, {"t0": stripes((0, 3))}, ["vertical", "fill-holes"])
    assert np.array_equal(masks["t1"], stripes((0, 3))) and changed["fill-holes"] == []
    masks, changed = run(column(3), {"t1": ring, "t2": ring}, {"t0": stripes((0, 3))}, ["fill-holes"])
    assert changed["fill-holes"] == ["t1", "t2"] and masks["t1"][25:35, 25:35].all()


# -- boundary ----------------------------------------------------------------------------------------------------
def test_boundary_is_extruded_from_one_known_side():
    # 2 x 2: K (train) at (0, 0), P (test, predicted empty) below it, Q (test, predicted salt) at (1, 1),
    # R (test, predicted empty) right of K
    layout = Mosaics(["K", "R", "P", "Q"], [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1])
    k = np.zeros((S, S), bool)
    k[60:, 20:50] = True  # bottom row partly salt; right column no salt
    z = np.zeros((S, S), bool)
    q = noise(1, 4)[0]
    masks, changed = run(layout, {"R": z, "P": z, "Q": q}, {"K": k}, ["boundary"])
    assert np.array_equal(masks["P"], stripes((20, 50)))  # K's bottom row on every row
    assert not masks["R"].any() and np.array_equal(masks["Q"], q)  # R faces no salt edge; Q was not empty
    assert changed == {"boundary": ["P"]}
    # along the other axis: a known tile on the left whose right column is partly salt
    left = np.zeros((S, S), bool)
    left[:40, 80:] = True
    masks, changed = run(Mosaics(["K", "R"], [0, 0], [0, 0], [0, 1]), {"R": z}, {"K": left}, ["boundary"])
    expected = np.zeros((S, S), bool)
    expected[:40] = True  # K's right column on every column
    assert np.array_equal(masks["R"], expected) and changed == {"boundary": ["R"]}


def test_boundary_is_interpolated_between_two_known_sides():
    top = np.zeros((S, S), bool)
    top[:, :50] = True  # its bottom row: salt in columns 0..49
    bottom = np.zeros((S, S), bool)
    bottom[:, :30] = True  # its top row: salt in columns 0..29
    masks, changed = run(column(3), {"t1": np.zeros((S, S), bool)}, {"t0": top, "t2": bottom}, ["boundary"])
    m = masks["t1"]
    width = m.sum(axis=1)
    # the boundary moves linearly from 49.5 (above row 0) to 29.5 (below row 100): row i has the columns
    # x < 49.5 - 20 (i + 1) / 102
    expected = np.ceil(49.5 - 20 * (np.arange(S) + 1) / 102).astype(int)
    assert np.array_equal(width, expected) and width[0] == 50 and width[50] == 40 and width[-1] == 30
    assert all(m[i, :width[i]].all() for i in range(S))  # every row a run from the left edge
    # against an empty facing edge the salt thins out and stops about half-way (the edge counts FAR from a boundary)
    masks, _ = run(column(3), {"t1": np.zeros((S, S), bool)}, {"t0": top, "t2": np.zeros((S, S), bool)},
                   ["boundary"])
    width = masks["t1"].sum(axis=1)
    assert width[0] == 50 and (np.diff(width) <= 0).all() and width[49] > 0 and width[50] == 0


def test_boundary_prefers_the_vertical_axis():
    layout = Mosaics(["U", "L", "P"], [0] * 3, [0, 1, 1], [1, 0, 1])  # U above P, L left of P
    u = np.zeros((S, S), bool)
    u[:, 10:20] = True
    left = np.zeros((S, S), bool)
    left[:50, 90:] = True
    masks, _ = run(layout, {"P": np.zeros((S, S), bool)}, {"U": u, "L": left}, ["boundary"])
    assert np.array_equal(masks["P"], stripes((10, 20)))


def test_signed_distance_by_hand():
    line = np.zeros((1, 8), bool)
    line[0, 2:5] = True
    assert R.signed_distance(line)[0].tolist() == [-1.5, -0.5, 0.5, 1.5, 0.5, -0.5, -1.5, -2.5]
    assert R.signed_distance(np.ones((1, 4), bool))[0].tolist() == [R.FAR] * 4
    assert R.signed_distance(np.zeros((1, 4), bool))[0].tolist() == [-R.FAR] * 4


# -- fill holes --------------------------------------------------------------------------------------------------
def test_fill_holes_per_tile_never_across_tiles():
    ring = np.zeros((S, S), bool)
    ring[10:30, 10:30] = True
    ring[15:25, 15:25] = False
    filled = np.zeros((S, S), bool)
    filled[10:30, 10:30] = True
    open_u = ring.copy()
    open_u[15:25, 25:30] = False  # the hole opens through the right wall: not a hole
    diagonal = np.zeros((S, S), bool)  # a one-pixel square outline without its corner pixel: the inside meets
    diagonal[50:71, 50:71] = True  # the outside only diagonally, so it is a hole for 4-connected background
    diagonal[51:70, 51:70] = False
    diagonal[50, 50] = False
    layout = column(2)
    # t0 and t9 (first and last of the batch) have holes; t5 is in no mosaic; t1 known with a hole is kept
    ids = ["t0", "t5", "t1", "t9"]
    preds = np.stack([ring, open_u, ring, diagonal])
    out = R.apply_rules(preds, ids, layout, ["t1"], ring[None], ["fill-holes"])
    assert np.array_equal(out.masks[0], filled) and np.array_equal(out.masks[1], open_u)
    assert np.array_equal(out.masks[2], ring)
    assert out.masks[3][51:70, 51:70].all() and not out.masks[3][50, 50]
    assert out.changed["fill-holes"].tolist() == [True, False, False, True] and out.counts() == {"fill-holes": 2}
    assert out.line() == "fill-holes 2 tiles"


# -- names, the step's bookkeeping ------------------------------------------------------------------------------
def test_rule_names():
    assert R.parse_rules("fill-holes,vertical") == ("vertical", "fill-holes")
    assert R.parse_rules("none") == () and R.parse_rules("") == () and R.parse_rules([]) == ()
    with pytest.raises(UserError, match=r"--mosaic-rules: unknown mosaic rule 'verticl' \(the rules: vertical"):
        R.parse_rules("verticl,boundary")


def test_next_to_known_and_no_rules():
    ctx = R.Context(column(3), ["t0"], stripes((0, 9))[None])
    assert ctx.next_to_known(["t1", "t2", "x"]).tolist() == [True, False, False]
    pred = noise(2)
    out = ctx.apply(pred, ["t1", "t2"], ())
    assert np.array_equal(out.masks, pred) and out.changed == {} and out.line() == "no rule"


def test_the_rule_search_scores_each_subset_as_applying_it_would():
    from tgs import metric

    ring = np.zeros((S, S), bool)
    ring[20:60, 20:60] = True
    ring[30:50, 30:50] = False
    # two folds; in each a wall above a ring-shaped prediction and an empty one, next to a known tile
    layout = Mosaics([f"t{i}" for i in range(8)], [0, 0, 0, 0, 1, 1, 1, 1], [0, 1, 2, 0, 0, 1, 2, 0],
                     [0, 0, 0, 1, 0, 0, 0, 1])
    known = {"t0": stripes((20, 60)), "t4": stripes((25, 55)), "t3": np.ones((S, S), bool), "t7": ring}
    ids = np.array(["t1", "t2", "t5", "t6"])
    masks = np.stack([ring, np.zeros((S, S), bool), ring, ring])
    truth = np.stack([stripes((20, 60)), stripes((20, 60)), stripes((25, 55)), ring])
    groups = np.array([0, 0, 1, 1])
    contexts = [R.Context(layout, list(known), np.stack(list(known.values())))] * 2
    found = R.search_rules(masks, truth, ids, groups, contexts, ["fold0", "fold1"])
    for s, subset in enumerate(found.subsets):
        for k in range(2):
            direct = contexts[k].apply(masks[groups == k], ids[groups == k], subset)
            assert found.sums[s, k] == pytest.approx(metric.image_scores(direct.masks, truth[groups == k]).sum()), \
                (subset, k)
    # t1, t2, t5 and t6 get walls (t6 through t5, not known): right for the first three, wrong for t6
    assert found.alone["vertical"] == (4, pytest.approx(2 / 4))
    assert found.best == ("vertical",) and found.in_sample_gain == pytest.approx(0.5)
    # nested: fold1 alone gains nothing from it (+1 -1), so fold0 keeps no rule; fold1 takes fold0's choice, 0 gain
    assert [(name, subset, gain) for name, _, subset, gain in found.folds] == [("fold0", (), 0.0),
                                                                                ("fold1", ("vertical",), 0.0)]
    assert found.held_out_gain == 0.0 and found.kept == ()
    no_rules, vertical = found.empty_share(()), found.empty_share(("vertical",))
    assert (no_rules, vertical) == (0.25, 0.0)  # t2 was predicted empty; its wall fills it


def hand_built(gains) -> "R.RuleSearch":
    """A rule search of one rule over four folds of 10 images: with no rule every image scores 0.5; the rule raises
    the first ``gains[k]`` images of fold k by 0.5."""
    scores = np.full((2, 40), 0.5)
    groups = np.repeat(np.arange(4), 10)
    for k, n in enumerate(gains):
        scores[1, 10 * k:10 * k + n] = 1.0
    return R.RuleSearch(("vertical",), [(), ("vertical",)], scores, groups, np.zeros((2, 4), np.int64),
                        ["f0", "f1", "f2", "f3"], {})


def test_the_rules_for_one_fold_are_decided_without_its_truth():
    """The rule raises 8 images of folds 1 and 2 each and leaves folds 0 and 3 alone."""
    found = hand_built([0, 8, 8, 0])
    # fold 0 and 3: the others include folds 1 and 2, each of which the rest's choice helps (16 images of 30 gain,
    # none loses: credible)
    assert found.for_fold(0) == ("vertical",) and found.for_fold(3) == ("vertical",)
    # fold 1: of the other folds 0, 2, 3 only fold 2 gains; held out, fold 2 gets the choice of 0 and 3 (none): no
    # gain, so none is kept, although the rule helps fold 1 itself
    assert found.for_fold(1) == () and found.for_fold(2) == ()
    two = R.RuleSearch(("vertical",), [(), ("vertical",)], found.scores[:, :20], found.groups[:20],
                       np.zeros((2, 2), np.int64), ["f0", "f1"], {})
    assert two.for_fold(0) == () and two.for_fold(1) == ()  # one other fold: no held-out estimate
    nested = hand_built([0, 0, 8, 8])  # on the nested masks folds 2 and 3 gain
    found.nested = nested  # the held-out figures come from the nested masks' search
    assert found.folds == nested.folds and found.for_fold(1) == ("vertical",)
    # a single image gained in each of folds 2 and 3: a held-out gain, but two images are no evidence
    assert hand_built([0, 0, 1, 1]).for_fold(1) == ()


def test_a_rule_is_kept_only_when_its_own_held_out_gain_is_credible():
    """Two folds of 20 images: vertical raises 8 images of each fold (+0.5 each); boundary raises one image of fold0
    only. In-sample both rules are best; held out, boundary alone gains nothing (fold1 has no use for it and fold0
    gets fold1's choice): the set's gain is credible, boundary's own is not, so vertical alone is kept."""
    subsets = [(), ("vertical",), ("boundary",), ("vertical", "boundary")]
    scores = np.full((4, 40), 0.5)
    groups = np.repeat([0, 1], 20)
    for k in (0, 1):
        scores[[1, 3], 20 * k:20 * k + 8] = 1.0
    scores[[2, 3], 19] = 1.0  # boundary: one image of fold0
    found = R.RuleSearch(("vertical", "boundary"), subsets, scores, groups, np.zeros((4, 2), np.int64),
                         ["fold0", "fold1"], {})
    assert found.best == ("vertical", "boundary") and found.verdict.credible
    assert found.rule_verdicts["vertical"].credible and not found.rule_verdicts["boundary"].credible
    assert found.kept == ("vertical",)
    text = "\n".join(found.lines())
    assert "kept: vertical (" in text and "boundary     alone, held out: not credible" in text
    # the kept rule's own nested gain: each fold gets vertical from the other (+0.5 on 8 of 20 images)
    assert found.kept_held_out_gain == pytest.approx(0.2)
