"""Mosaic assembly and the layout object: hand-built sections, conflicts, the synthetic truth, files and the CLI."""
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from cli import mosaic as mosaic_cli
from datasets import folds, mosaic, synthetic
from tgs.errors import DataError
from tgs.mosaic import Mosaics, Pairs, cell_lookup

S = 101


def textured(rng, height, width, sigma=2.0):
    """A smooth random texture (uint8) of height x width tiles, continuous everywhere."""
    field = ndimage.gaussian_filter(rng.standard_normal((height * S, width * S)), sigma)
    field = (field - field.mean()) / field.std()
    return np.clip(128 + 35 * field, 0, 255).astype(np.uint8)


def cut(section):
    """Tiles of a section, row by row, and their (row, col)."""
    h, w = section.shape[0] // S, section.shape[1] // S
    tiles = [section[r * S:(r + 1) * S, c * S:(c + 1) * S] for r in range(h) for c in range(w)]
    return np.stack(tiles), np.array([(r, c) for r in range(h) for c in range(w)])


def ids_for(n):
    return np.array([f"t{i:04d}" for i in range(n)])


def test_a_shuffled_section_is_rebuilt_exactly():
    rng = np.random.default_rng(0)
    tiles, pos = cut(textured(rng, 3, 3))
    others, _ = cut(textured(rng, 2, 4, sigma=1.5))  # another section: its tiles are never neighbours of these
    others = others[[0, 2, 5, 7]]  # keep only tiles that are not next to each other
    images = np.concatenate([tiles, others])
    order = rng.permutation(len(images))
    ids = ids_for(len(images))
    result = mosaic.assemble(ids, images[order])
    m = result.mosaics
    section = order < 9  # which shuffled tiles come from the 3x3 section
    assert sorted(m.ids) == sorted(ids[section]) and set(m.mosaic) == {0}
    where = m.index_of(ids[section])
    true_pos = pos[order[section]]
    assert np.array_equal(np.stack([m.row[where], m.col[where]], axis=1), true_pos)
    assert len(result.pairs) == 12 and set(result.pairs.rel) == {"LR", "TB"}
    assert (result.pairs.score > 0.9).all()


def test_flat_edges_never_match():
    rng = np.random.default_rng(1)
    section = textured(rng, 1, 2)
    section[:, S - 6:S + 6] = 100  # the seam runs through a blank band: both facing edges are constant
    tiles, _ = cut(section)
    blank = np.full((2, S, S), 77, np.uint8)  # two identical flat tiles
    images = np.concatenate([tiles, blank, cut(textured(rng, 1, 3))[0][[0, 2]]])
    assert mosaic.flat_edges(images, "right")[0] and mosaic.flat_edges(images, "left")[1]
    assert mosaic.flat_edges(images, "top")[2:4].all() and not mosaic.flat_edges(images, "top")[0]
    cand = mosaic.match(images)
    assert len(cand.a) == 0


def test_a_null_query_is_never_matched_with_its_own_tile():
    """A tile whose columns are all alike: the line 20 columns in is its own left edge again, a perfect match that
    no real right edge could have. The null queries must skip it, as real edges skip their own tile."""
    rng = np.random.default_rng(3)
    images, _ = cut(textured(rng, 2, 3))
    images[0] = np.repeat(images[0][:, :1], S, axis=1)  # every column equals the first
    seam = mosaic.SEAMS["LR"]
    filters = mosaic.learn_filters(images, seam)
    second = mosaic.descriptors(images, seam, filters)[1]
    ok_b = np.arange(len(images))
    inner = mosaic.halves(images[:1], seam, mosaic.NULL_CUTS[0])[0]
    query = mosaic._unit(mosaic.filter_responses(inner, seam.first, filters.first, filters.weight))
    unguarded = mosaic.nearest_both(query, np.array([-1]), second, ok_b, 2, backward=False)[0]
    assert unguarded[0, 0] == 0  # the premise: left alone, the query finds its own tile
    for tiles, best, _ in mosaic.null_matches(images, seam, filters, second, ok_b, np.arange(len(images))):
        assert 0 in tiles and (best[:, 0] != tiles).all() and (best[:, 1] != tiles).all()


def test_an_ambiguous_pair_is_refused():
    rng = np.random.default_rng(2)
    tiles, _ = cut(textured(rng, 1, 2))
    distractors = cut(textured(rng, 1, 5))[0][[0, 2, 4]]
    plain = mosaic.match(np.concatenate([tiles, distractors]))
    assert list(zip(plain.a, plain.b, plain.rel)) == [(0, 1, "LR")]  # the pair alone is found
    twice = np.concatenate([tiles, tiles[1:], distractors])  # two identical candidates right of tile 0
    cand = mosaic.match(twice)
    assert not ((cand.a == 0) & (cand.rel == "LR")).any()


def test_a_conflict_drops_the_weakest_pair_and_keeps_the_rest():
    # a 2x2 square (tiles 0 1 / 2 3), a chain 4 - 5 to its right, and two wrong pairs:
    # 6 left of 1 (tile 6 would sit on tile 0's cell) and 0 left of 3 (a cycle that does not close)
    a = np.array([0, 2, 0, 1, 1, 4, 6, 0])
    b = np.array([1, 3, 2, 3, 4, 5, 1, 3])
    rel = np.array(["LR", "LR", "TB", "TB", "LR", "LR", "LR", "LR"])
    cost = np.array([0.1, 0.1, 0.2, 0.2, 0.15, 0.1, 0.3, 0.35])
    place = mosaic.layout(7, a, b, rel, cost)
    assert list(place.kept) == [True] * 6 + [False, False]
    placed = np.flatnonzero(place.component >= 0)
    assert list(placed) == [0, 1, 2, 3, 4, 5] and len(set(place.component[placed])) == 1
    rows, cols = place.row[placed] - place.row[0], place.col[placed] - place.col[0]
    assert list(zip(rows, cols)) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3)]


def test_one_wrong_pair_gluing_two_mosaics_is_the_one_dropped():
    """A strong wrong pair that lays mosaic B onto mosaic A clashes in every cell; the pair on all the clashing
    paths goes, not the weakest true pairs of each path."""
    square = [(0, 1, "LR"), (2, 3, "LR"), (0, 2, "TB"), (1, 3, "TB")]
    a = np.array([p[0] for p in square] + [p[0] + 4 for p in square] + [0])
    b = np.array([p[1] for p in square] + [p[1] + 4 for p in square] + [5])
    rel = np.array([p[2] for p in square] * 2 + ["LR"])
    cost = np.array([0.1, 0.4, 0.1, 0.45, 0.1, 0.5, 0.1, 0.1, 0.2])  # the wrong pair 0 -> 5 is not the weakest
    place = mosaic.layout(8, a, b, rel, cost)
    assert list(place.kept) == [True] * 8 + [False]
    assert len(set(place.component[:4])) == 1 and len(set(place.component[4:])) == 1
    assert place.component[0] != place.component[4]


def fitting(*pairs):
    """A seam check for :func:`mosaic.layout` that says yes to exactly these (a, b, rel)."""
    good = set(pairs)
    return lambda a, b, rel: np.array([(int(x), int(y), str(r)) in good for x, y, r in zip(a, b, rel)], bool)


def test_one_hard_seam_inside_a_join_is_forgiven_but_not_at_its_end():
    # two columns of three tiles (0 2 4 left, 1 3 5 right), joined by the LR pairs 0-1 and 4-5: tiles 2 and 3 end
    # up side by side with no pair, and their seam does not fit; the seams above and below it hold
    a = np.array([0, 2, 1, 3, 0, 4])
    b = np.array([2, 4, 3, 5, 1, 5])
    rel = np.array(["TB", "TB", "TB", "TB", "LR", "LR"])
    cost = np.array([0.1, 0.1, 0.1, 0.1, 0.2, 0.3])
    place = mosaic.layout(6, a, b, rel, cost, fitting())
    assert place.kept.all() and len(set(place.component)) == 1
    # without the pair 4-5 the misfit 2-3 has a holding seam on one side only, and 4-5 does not fit either: the
    # join by 0-1 alone puts two pairs of unrelated tiles side by side, and it is the pair dropped
    place = mosaic.layout(6, a[:5], b[:5], rel[:5], cost[:5], fitting())
    assert list(place.kept) == [True] * 4 + [False]
    assert place.component[0] != place.component[1]
    # with the seam 4-5 fitting, the misfit 2-3 is forgiven again
    place = mosaic.layout(6, a[:5], b[:5], rel[:5], cost[:5], fitting((4, 5, "LR")))
    assert place.kept.all()


def tables_with_best(n, best):
    """Candidate tables where each (a, b, rel) in ``best`` is a's and b's clear best candidate, and nothing else."""
    out = {}
    for r in ("LR", "TB"):
        fwd, bwd = np.full((n, 2), -1, np.int64), np.full((n, 2), -1, np.int64)
        fwd_d, bwd_d = np.full((n, 2), np.inf), np.full((n, 2), np.inf)
        for x, y, rel in best:
            if rel == r:
                fwd[x, 0], fwd_d[x] = y, (0.5, 1.0)
                bwd[y, 0], bwd_d[y] = x, (0.5, 1.0)
        out[r] = mosaic.EdgeTable(r, fwd, fwd_d, bwd, bwd_d, 0.5)
    return out


def test_a_join_of_two_mosaics_needs_other_seams_that_fit_and_no_shared_cell():
    # mosaic 0: tiles 0 above 2; mosaic 1: tiles 1 above 3; tile 1 is tile 0's best candidate on its right (a best
    # candidate always fits: it is first in a candidate list)
    place = mosaic.Placement(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]),
                             np.ones(2, bool))
    tables = tables_with_best(4, [(0, 1, "LR")])
    joined = mosaic.join_pairs(tables, place, fitting((0, 1, "LR"), (2, 3, "LR")))
    assert list(zip(joined.a, joined.b, joined.rel)) == [(0, 1, "LR")] and joined.distance[0] == 0.5
    assert len(mosaic.join_pairs(tables, place, fitting((0, 1, "LR"))).a) == 0  # 2 and 3 side by side do not fit
    # mosaic 1 as a row (1 left of 3): the join touches mosaic 0 nowhere else, so nothing confirms it
    row = mosaic.Placement(place.component, np.array([0, 0, 1, 0]), np.array([0, 0, 0, 1]), place.kept)
    assert len(mosaic.join_pairs(tables, row, fitting((0, 1, "LR"), (2, 3, "LR"))).a) == 0
    # mosaic 1 reaching down-left (3 below-left of 1) puts tile 3 on tile 2's cell: refused however well it fits
    onto = mosaic.Placement(place.component, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 0]), place.kept)
    assert len(mosaic.join_pairs(tables, onto, fitting((0, 1, "LR"), (2, 3, "LR"), (3, 2, "LR"))).a) == 0


def test_joins_are_checked_in_bounded_chunks(monkeypatch):
    # mosaic 0: a column of three (0 2 4); mosaics 1 and 2: columns of two (1 3, 5 7); tiles 1 and 5 are both
    # candidates right of 0 and 4: each join is checked on its own, in chunks of one moved tile
    place = mosaic.Placement(np.array([0, 1, 0, 1, 0, 2, -1, 2]), np.array([0, 0, 1, 1, 2, 0, 0, 1]),
                             np.zeros(8, np.int64), np.ones(4, bool))
    tables = tables_with_best(8, [(0, 1, "LR"), (4, 5, "LR")])
    fits = fitting((0, 1, "LR"), (4, 5, "LR"), (2, 3, "LR"))  # 1-3 fits beside 0-2; 5-7 would sit beside 4 alone
    whole = mosaic.join_pairs(tables, place, fits)
    monkeypatch.setattr(mosaic, "JOIN_ROWS", 1)
    chunked = mosaic.join_pairs(tables, place, fits)
    assert list(zip(whole.a, whole.b)) == list(zip(chunked.a, chunked.b)) == [(0, 1)]


@pytest.fixture(scope="module")
def sections():
    return synthetic.generate(400, np.random.default_rng(3))


def test_precision_and_recall_against_the_synthetic_layout(sections):
    s = sections
    result = mosaic.assemble(s.ids, s.images)
    truth = Mosaics(s.ids, s.section, s.row, s.col)
    q = mosaic.evaluate(result.mosaics, truth, s.ids, s.images)
    assert q["recoverable"] > 80
    # the sections are as hard as the real tiles (middling contrast, noisy seams): the measured figures are 1.0 / 0.92
    assert q["precision"] >= 0.99 and q["recall"] >= 0.85, q
    assert result.mosaics.collisions().size == 0
    assert (result.mosaics.row.min(initial=0), result.mosaics.col.min(initial=0)) == (0, 0)


def test_evaluate_counts_by_hand():
    truth = Mosaics(["a", "b", "c", "d"], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0])  # a b / c ; d alone
    found = Mosaics(["a", "b", "d", "c"], [0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0])  # a b / d: one wrong pair
    images = np.full((4, S, S), 50, np.uint8)
    images += np.arange(S, dtype=np.uint8)[None, :, None]  # rows vary: no edge is flat
    images += np.arange(S, dtype=np.uint8)[None, None, :]
    q = mosaic.evaluate(found, truth, np.array(["a", "b", "c", "d"]), images)
    assert (q["found_pairs"], q["correct"], q["recoverable"], q["recovered"]) == (2, 1, 2, 1)
    assert q["precision"] == 0.5 and q["recall"] == 0.5


# -- the layout object ---------------------------------------------------------------------------------------------
@pytest.fixture
def layout():
    # mosaic 0:  a b .      mosaic 1:  e
    #            c . d                 f
    return Mosaics(["a", "b", "c", "d", "e", "f"], [0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 1], [0, 1, 0, 2, 0, 0])


def test_neighbours(layout):
    q = np.array(["d", "a", "b", "c", "x", "f", "e"])  # any order; x is in no mosaic
    nb = layout.neighbours(q)
    assert list(nb.right) == [-1, 2, -1, -1, -1, -1, -1]  # a's right neighbour is b (index 2 in q)
    assert list(nb.left) == [-1, -1, 1, -1, -1, -1, -1]
    assert list(nb.down) == [-1, 3, -1, -1, -1, -1, 5]  # a above c, e above f
    assert list(nb.up) == [-1, -1, -1, 1, -1, 6, -1]
    assert list(nb.count()) == [0, 2, 1, 1, 0, 1, 1]
    only_test = layout.neighbours(np.array(["a", "c"]))  # neighbours outside the list are -1
    assert list(only_test.right) == [-1, -1] and list(only_test.down) == [1, -1]
    with pytest.raises(ValueError):
        layout.neighbours(np.array(["a", "a"]))


def test_grids_and_adjacent(layout):
    g = layout.grids()
    assert g[0].tolist() == [[0, 1, -1], [2, -1, 3]] and g[1].tolist() == [[4], [5]]
    q = np.array(["f", "a", "d"])
    assert layout.grids(q)[0].tolist() == [[1, -1, -1], [-1, -1, 2]]
    pairs = layout.adjacent_ids()
    assert sorted(map(tuple, pairs.to_numpy())) == [("a", "b", "LR"), ("a", "c", "TB"), ("e", "f", "TB")]
    assert list(layout.sizes()) == [4, 2]


def test_files_round_trip(layout, tmp_path):
    path = tmp_path / "mosaics.csv"
    layout.write(path)
    assert path.read_text().splitlines()[0] == "id,mosaic,row,col"
    back = Mosaics.read(path, known_ids=list("abcdefgh"))
    assert sorted(zip(back.ids, back.mosaic, back.row, back.col)) == \
        sorted(zip(layout.ids, layout.mosaic, layout.row, layout.col))
    pairs = Pairs(["a", "a"], ["b", "c"], ["LR", "TB"], [0.9876543, 0.5])
    pairs.write(tmp_path / "pairs.csv")
    assert (tmp_path / "pairs.csv").read_text().splitlines() == ["a,b,rel,score", "a,b,LR,0.987654", "a,c,TB,0.5"]
    back = Pairs.read(tmp_path / "pairs.csv", known_ids=list("abc"))
    assert list(back.rel) == ["LR", "TB"] and back.score[1] == 0.5


BAD_MOSAICS = {
    "header": ("id,mosaic,row,column\na,0,0,0\n", "header is"),
    "integer": ("id,mosaic,row,col\na,0,0,0\nb,0,x1,1\n", "row 'x1' is not a non-negative integer"),
    "duplicate id": ("id,mosaic,row,col\na,0,0,0\na,0,0,1\n", "listed more than once"),
    "two ids one cell": ("id,mosaic,row,col\na,0,0,0\nb,0,0,0\n", "are both at mosaic 0 row 0 col 0"),
    # hostile numbers that every consumer (grids, sizes, keys) would pay for: refused where the file is read
    "position near 2^29": ("id,mosaic,row,col\na,0,0,0\nb,1,536870911,536870910\n", "row 536870911 is too large"),
    "mosaic id 999999999": ("id,mosaic,row,col\na,0,0,0\nb,999999999,0,0\n", "mosaic 999999999 is too large"),
    "tiles far apart": ("id,mosaic,row,col\na,0,0,0\nb,0,60000,60000\n", "grids would hold 3600120001 cells"),
}


@pytest.mark.parametrize("case", sorted(BAD_MOSAICS))
def test_bad_mosaics_files(tmp_path, case):
    text, message = BAD_MOSAICS[case]
    path = tmp_path / "mosaics.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        Mosaics.read(path, known_ids=["a", "b"])
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_positions_are_keyed_exactly_whatever_their_size():
    """Tiles at huge positions in other mosaics are never anyone's neighbour (the keys cannot overflow)."""
    big = 2 ** 62
    m = Mosaics(["a", "b", "c", "d", "e"], [0, 0, 7, 7, 2 ** 40], [0, 0, big, big, 1], [0, 1, big, big + 1, 0])
    nb = m.neighbours(m.ids)
    assert list(nb.right) == [1, -1, 3, -1, -1] and list(nb.left) == [-1, 0, -1, 2, -1]
    assert list(nb.up) == list(nb.down) == [-1] * 5
    assert m.collisions().size == 0
    assert Mosaics(["a", "b"], [5, 5], [big, big], [3, 3]).collisions().tolist() == [[0, 1]]


def test_one_cell_lookup_serves_layouts_and_files():
    """The lookup that the layout, the mosaics object and the benchmark share: tiles found by their cell, empty
    cells and values that no tile has give -1, and so does any query on an empty layout."""
    at = cell_lookup([3, 3, 3, 9], [0, 0, 1, -5], [0, 1, 0, 2])
    found = at([3, 3, 3, 9, 3, 9, 4], [0, 0, 1, -5, 1, -5, 0], [0, 1, 0, 2, 1, 3, 0])
    assert found.tolist() == [0, 1, 2, 3, -1, -1, -1]
    assert at(np.zeros(0), np.zeros(0), np.zeros(0)).shape == (0,)
    assert cell_lookup([], [], [])([1, 2], [0, 0], [0, 0]).tolist() == [-1, -1]


def test_pairs_file_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("a,b,rel,score\na,b,RL,0.5\n")
    with pytest.raises(DataError, match="rel 'RL' is not LR or TB"):
        Pairs.read(path)
    path.write_text("a,b,rel,score\na,b,LR,high\n")
    with pytest.raises(DataError, match="score 'high' is not a number"):
        Pairs.read(path)
    path.write_text("a,b,rel,score\na,zz,LR,0.5\n")
    with pytest.raises(DataError, match="not in this dataset's train or test ids: zz"):
        Pairs.read(path, known_ids=["a", "b", "c"])


# -- through the CLIs ------------------------------------------------------------------------------------------------
def test_mosaic_cli(synthetic_root, tmp_path, capsys):
    out = tmp_path / "m"
    assert mosaic_cli.main(["--data-dir", str(synthetic_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "placed" in printed and "test tiles next to a train tile" in printed and "mosaic sizes" in printed
    assert (out / "mosaics.csv").read_text().splitlines()[0] == "id,mosaic,row,col"
    assert (out / "pairs.csv").read_text().splitlines()[0] == "a,b,rel,score"
    layout = synthetic.read_layout(synthetic_root)
    found = Mosaics.read(out / "mosaics.csv", known_ids=layout["id"])
    assert len(found) > 0
    true = Mosaics(layout["id"], layout["section"], layout["row"], layout["col"]).adjacent_ids()
    got = found.adjacent_ids()
    # 160 tiles: a tile two columns away whose middle tile is not in the set can pass the ratio test (measured:
    # 25 true of 26); the precision on a section-sized set is test_precision_and_recall_against_the_synthetic_layout's
    assert len(got) >= 20 and len(got.merge(true, on=["a", "b", "rel"])) >= 0.95 * len(got)


@pytest.mark.parametrize("argv, message", [
    (["--data-dir", "DATA"], "the following arguments are required: --out"),
    (["--data-dir", "DATA", "--out", "OUT", "--ratio", "x"], "--ratio: 'x' is not a number"),
    (["--data-dir", "DATA", "--out", "OUT", "--ratio", "1.5"], "--ratio: must be in (0, 1], got 1.5"),
    (["--data-dir", "DATA", "--out", "OUT", "--ratio", "0"], "--ratio: must be in (0, 1], got 0"),
    (["--data-dir", "DATA", "--out", "OUT", "--ratio", "nan"], "--ratio: 'nan' is not a finite number"),
    (["--data-dir", "MISSING", "--out", "OUT"], "does not exist"),
    (["--data-dir", "DATA", "--out", ""], "--out: an empty path"),
    (["--data-dir", "DATA", "--out", "DATA/train/masks/x"], "would overwrite the dataset's train in"),
])
def test_mosaic_cli_errors_are_one_line(synthetic_root, tmp_path, capsys, argv, message):
    argv = [a.replace("DATA", str(synthetic_root)) if a.startswith("DATA/") else
            str(synthetic_root) if a == "DATA" else str(tmp_path / "nope") if a == "MISSING"
            else str(tmp_path / "o") if a == "OUT" else a for a in argv]
    assert mosaic_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def _train_and_test_ids(root):
    return (pd.read_csv(root / "train.csv", dtype=str)["id"].tolist(),
            pd.read_csv(root / "sample_submission.csv", dtype=str)["id"].tolist())


@pytest.mark.parametrize("case", ["unknown ids", "another dataset", "two ids one cell", "header"])
def test_bad_mosaics_file_through_the_folds_cli(synthetic_root, tmp_path, capsys, case):
    train_ids, test_ids = _train_and_test_ids(synthetic_root)
    rows = {"unknown ids": [(train_ids[0], 0, 0, 0), (train_ids[1], 0, 0, 1), ("ffffffffff", 0, 1, 0)],
            "another dataset": [(f"{i:010x}", 0, 0, i) for i in range(5)] + [(train_ids[0], 0, 1, 0)],
            "two ids one cell": [(train_ids[0], 0, 0, 0), (test_ids[0], 0, 0, 0)],
            "header": None}[case]
    path = tmp_path / "mosaics.csv"
    if rows is None:
        path.write_text("id,mosaic,row\nx,0,0\n")
    else:
        pd.DataFrame(rows, columns=["id", "mosaic", "row", "col"]).to_csv(path, index=False)
    code = folds.main(["--data-dir", str(synthetic_root), "--k", "4", "--out", str(tmp_path / "f.csv"),
                       "--mosaics", str(path)])
    err = capsys.readouterr().err
    expected = {"unknown ids": "1 of its 3 ids are not in this dataset's train or test ids: ffffffffff",
                "another dataset": "belongs to another dataset", "two ids one cell": "are both at mosaic 0",
                "header": "header is 'id,mosaic,row'"}[case]
    assert code == 2 and expected in err and str(path) in err and err.count("\n") == 1
    assert not (tmp_path / "f.csv").exists()


def test_full_disk_leaves_the_previous_pair_of_files_intact(synthetic_root, tmp_path):
    """A size limit that lets mosaics.csv through but not pairs.csv: neither file of the old pair changes."""
    import os
    import resource
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = lambda out, *extra, limit=None: subprocess.run(  # noqa: E731
        [sys.executable, str(root / "mosaic.py"), "--data-dir", str(synthetic_root), "--out", str(out), "--no-cache",
         *extra], capture_output=True, text=True, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
        preexec_fn=None if limit is None else lambda: (signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
                                                       resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))))
    old, new = tmp_path / "old", tmp_path / "new"
    assert run(old, "--ratio", "0.2").returncode == 0 and run(new).returncode == 0
    sizes = {f: (new / f).stat().st_size for f in ("mosaics.csv", "pairs.csv")}
    assert sizes["mosaics.csv"] < sizes["pairs.csv"] and (old / "mosaics.csv").read_bytes() != (
        new / "mosaics.csv").read_bytes()
    before = {f: (old / f).read_bytes() for f in sizes}
    r = run(old, limit=sizes["mosaics.csv"] + 10)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the disk is full or a size limit was reached" in r.stderr and "previous version is intact" in r.stderr
    assert {f: (old / f).read_bytes() for f in sizes} == before
    assert not list(old.glob(".*.tmp"))


@pytest.mark.parametrize("case", ["one tile", "all flat", "all identical", "no tile"])
def test_degenerate_sets_give_a_valid_empty_result(case):
    rng = np.random.default_rng(5)
    one = textured(rng, 1, 1)[None]
    images = {"one tile": one, "all flat": np.full((6, S, S), 90, np.uint8),
              "all identical": np.repeat(one, 6, axis=0), "no tile": np.zeros((0, S, S), np.uint8)}[case]
    result = mosaic.assemble(ids_for(len(images)), images)
    assert len(result.mosaics) == 0 and len(result.pairs) == 0 and result.mosaics.sizes().size == 0


def test_a_data_folder_with_one_tile_gives_a_header_only_pair(tmp_path, capsys):
    data = tmp_path / "one"
    synthetic.write_dataset(data, n_train=1, n_test=0, seed=1)
    out = tmp_path / "m"
    assert mosaic_cli.main(["--data-dir", str(data), "--out", str(out), "--no-cache"]) == 0
    assert "placed 0 of 1 tiles" in capsys.readouterr().out
    assert (out / "mosaics.csv").read_text().splitlines() == ["id,mosaic,row,col"]
    assert (out / "pairs.csv").read_text().splitlines() == ["a,b,rel,score"]
    assert len(Mosaics.read(out / "mosaics.csv")) == 0


def test_a_pair_is_in_a_closed_square_only_when_both_cells_beside_it_are_occupied():
    # mosaic 0: a 2x2 block at (0,0)-(1,1) and a tail at (0,2); mosaic 1: a lone pair at the same cells as the tail's
    m = Mosaics(ids_for(7), [0, 0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 1, 1], [0, 1, 0, 1, 2, 1, 2])
    a, b, rel = m.adjacent()
    got = {(m.ids[i], m.ids[j], r): bool(s) for i, j, r, s in zip(a, b, rel, mosaic.in_closed_square(m, a, rel))}
    assert got == {("t0000", "t0001", "LR"): True, ("t0002", "t0003", "LR"): True,
                   ("t0001", "t0004", "LR"): False,  # (1,1) is occupied, (1,2) is not
                   ("t0005", "t0006", "LR"): False,  # mosaic 0's cells do not count for mosaic 1
                   ("t0000", "t0002", "TB"): True, ("t0001", "t0003", "TB"): True}
    assert not mosaic.in_closed_square(m, np.array([], np.int64), np.array([], str)).size


def test_truth_free_counts_the_mask_disagreements_inside_closed_squares():
    masks = np.zeros((5, S, S), np.uint8)
    masks[1] = 1  # t0001 all salt: its seams with t0000 (LR) and t0003 (TB) disagree over a whole edge
    m = Mosaics(ids_for(5), [0] * 5, [0, 0, 1, 1, 0], [0, 1, 0, 1, 2])  # t0004 a tail right of t0001
    result = mosaic.Assembly(m, Pairs([], [], [], []), 0, None)
    free = mosaic.truth_free(result, ids_for(5), masks)
    assert free["train_train_pairs"] == 5 and free["mask_disagree"] == 3  # t0001 with t0000, t0003, t0004
    assert free["mask_disagree_whole_edges"] == 3 and free["mask_disagree_in_squares"] == 2
    assert free["pairs_in_squares"] == 4 and free["adjacent_pairs"] == 5 and free["squares"] == 1


def test_longest_run_and_an_edge_that_is_mostly_one_grey_level_is_flat():
    lines = np.array([[1, 1, 2, 2, 2, 3], [5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6], [7, 8, 8, 7, 7, 7]])
    assert mosaic.longest_run(lines).tolist() == [3, 6, 1, 3]
    assert mosaic.longest_run(np.zeros((2, 0))).tolist() == [0, 0]
    rng = np.random.default_rng(0)
    tiles = textured(rng, 1, 3)
    tiles = np.stack([tiles[:, :S], tiles[:, S:2 * S], tiles[:, 2 * S:]])
    water = mosaic.MIN_TEXTURED - 1  # pixels of texture left below still water
    tiles[1, :S - water, :] = 90  # still water over all but 19 rows: its left and right edges are flat
    tiles[2, :S - water - 2, :] = 90  # 21 rows of texture: not flat
    assert mosaic.flat_edges(tiles, "left").tolist() == [False, True, False]
    assert mosaic.flat_edges(tiles, "right").tolist() == [False, True, False]
    assert mosaic.flat_edges(tiles, "top").tolist() == [False, True, True]  # the water's own edge
