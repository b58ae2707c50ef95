"""The mosaic benchmark's truth-free checks on hand-built sections: the hole test finds a tile left out of a mosaic's
cell and finds nothing where the cell's tile is absent from the set; the leftover test counts a pair left out,
among the unplaced tiles or at a mosaic's border."""
import argparse

import numpy as np

from bench import bench_mosaic
from datasets import mosaic, synthetic
from tests.test_mosaic import cut, ids_for, textured
from tgs.mosaic import Mosaics


def sides(images):
    """The benchmark's edge descriptors of ``images``, with the filters the matcher learns on them."""
    return bench_mosaic.edge_descriptors(images, mosaic.edge_tables(images))


def test_the_hole_test_finds_a_missed_tile_and_nothing_in_a_true_hole():
    rng = np.random.default_rng(4)
    tiles, pos = cut(textured(rng, 3, 3))  # tile 4 is the centre
    others = cut(textured(rng, 2, 6, sigma=1.5))[0][[0, 2, 4, 7, 9, 11]]  # tiles of another section, none adjacent
    images = np.concatenate([tiles, others])
    ids = ids_for(len(images))
    ring = [i for i in range(9) if i != 4]
    found = Mosaics(ids[ring], np.zeros(8, np.int64), pos[ring, 0], pos[ring, 1])  # the centre left out
    missed = bench_mosaic.hole_test(ids, found, sides(images))
    assert missed["holes"] == 1 and missed["holes_fillable"] == 1
    assert missed["control"] == 8 and missed["control_found"] == 8 and missed["control_null"] == 0
    # no centre in the set
    absent = bench_mosaic.hole_test(np.delete(ids, 4), found, sides(np.delete(images, 4, axis=0)))
    assert absent["holes"] == 1 and absent["holes_fillable"] == 0


def test_the_leftover_test_sees_a_pair_left_unplaced_and_none_by_chance():
    rng = np.random.default_rng(6)
    pair = cut(textured(rng, 1, 2))[0]  # tile 0 left of tile 1
    others = cut(textured(rng, 3, 4, sigma=1.5))[0][[0, 2, 5, 7, 8, 10]]  # none next to another
    images = np.concatenate([pair, others])
    ids = ids_for(len(images))
    result = mosaic.assemble(ids, images)
    assert sorted(result.mosaics.ids) == ["t0000", "t0001"]
    descriptors = bench_mosaic.edge_descriptors(images, result.tables)
    found = bench_mosaic.leftover_test(ids, images, result, descriptors)
    for name in ("unplaced", "border"):  # nothing left: nothing seen, next to nothing expected
        assert found["LR"][name]["seen"][0] == 0 and found["LR"][name]["chance"][0] < 1
    unplaced = mosaic.Assembly(Mosaics([], [], [], []), result.pairs, result.candidates, result.tables)
    left = bench_mosaic.leftover_test(ids, images, unplaced, descriptors)
    assert left["LR"]["unplaced"]["seen"][0] == 1 and left["LR"]["unplaced"]["chance"][0] < 1  # were it left out
    assert not left["LR"]["border"]["seen"].any() and not left["LR"]["border"]["chance"].any()  # no border


def test_the_leftover_test_sees_a_pair_missing_at_a_mosaic_border():
    """A strip of three tiles whose mosaic holds only the first two: the third tile's seam is a hidden pair at
    the mosaic's border, counted once (as the border's, not as the unplaced tile's, whose a side faces nothing)."""
    rng = np.random.default_rng(6)
    strip = cut(textured(rng, 1, 3))[0]  # 0 | 1 | 2
    others = cut(textured(rng, 3, 4, sigma=1.5))[0][[0, 2, 5, 7, 8, 10]]  # none next to another
    images = np.concatenate([strip, others])
    ids = ids_for(len(images))
    result = mosaic.assemble(ids, images)
    assert sorted(result.mosaics.ids) == ["t0000", "t0001", "t0002"]
    first_two = mosaic.Assembly(Mosaics(ids[:2], [0, 0], [0, 0], [0, 1]), result.pairs, result.candidates,
                                result.tables)
    descriptors = bench_mosaic.edge_descriptors(images, result.tables)
    test = bench_mosaic.leftover_test(ids, images, first_two, descriptors)
    assert test["LR"]["border"]["seen"][0] == 1 and test["LR"]["border"]["chance"][0] < 1
    assert test["LR"]["unplaced"]["seen"][0] == 0
    # with a true layout, the match seen is counted as true; with a wrong one, it is not
    truth = Mosaics(ids[:3], [0, 0, 0], [0, 0, 0], [0, 1, 2])
    assert bench_mosaic.leftover_test(ids, images, first_two, descriptors, truth)["LR"]["border"]["true"][0] == 1
    wrong = Mosaics(ids[:3], [0, 0, 0], [0, 0, 0], [0, 2, 1])
    assert bench_mosaic.leftover_test(ids, images, first_two, descriptors, wrong)["LR"]["border"]["true"][0] == 0


def test_the_leftover_bins_split_the_ratios_at_their_edges():
    ratios = np.array([0.1, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0, np.nan])
    assert bench_mosaic.LEFT_BINS == (0.8, 0.9, 0.95)
    assert bench_mosaic._ratio_bin(ratios).tolist() == [0, 1, 1, 2, 3, 3, 3, 3]


def test_the_benchmark_prints_its_table_on_a_small_synthetic_set(tmp_path, capsys):
    synthetic.write_dataset(tmp_path / "data", n_train=160, n_test=80, seed=2)
    assert bench_mosaic.measure(argparse.Namespace(ratio=None), str(tmp_path / "data")) == 0
    out = capsys.readouterr().out
    for row in ("tiles placed", "half-tile test LR", "holes (empty cells", "unplaced tiles' mutual best matches",
                "mosaic borders'", "ratio 0.8-0.9, 0.9-0.95, 0.95-1", "seam correlation LR", "precision",
                "mosaic folds (k=10)"):
        assert row in out, row


def test_seams_of_true_neighbours_are_as_continuous_as_a_tile_and_wrong_ones_are_not():
    rng = np.random.default_rng(3)
    tiles, pos = cut(textured(rng, 3, 3))
    ids = ids_for(len(tiles))
    true = mosaic.seam_continuity(Mosaics(ids, np.zeros(9, np.int64), pos[:, 0], pos[:, 1]), ids, tiles)
    assert {rel: pairs for rel, (_, _, pairs) in true.items()} == {"LR": 6, "TB": 6}
    for across, inside, _ in true.values():
        assert inside > 0.9 and abs(across - inside) < 0.05  # the seam is one more line of the same texture
    order = np.array([4, 0, 8, 2, 6, 1, 7, 3, 5])  # no tile beside a true neighbour of its in the same relation
    wrong = mosaic.seam_continuity(Mosaics(ids[order], np.zeros(9, np.int64), pos[:, 0], pos[:, 1]), ids, tiles)
    for across, inside, _ in wrong.values():
        assert across < 0.5 < inside
    empty = mosaic.seam_continuity(Mosaics([], [], [], []), ids, tiles)
    assert all(pairs == 0 and np.isnan(across) for across, _, pairs in empty.values())


def test_the_half_tile_test_counts_the_unplaced_tiles_own_cuts():
    rng = np.random.default_rng(5)
    images = cut(textured(rng, 8, 8))[0]
    tables = mosaic.edge_tables(images)
    every = bench_mosaic.half_tile_test(images, tables, unplaced=np.ones(len(images), bool))
    none = bench_mosaic.half_tile_test(images, tables, unplaced=np.zeros(len(images), bool))
    for rel in ("LR", "TB"):
        assert every[rel]["unplaced_with_partner"] == every[rel]["with_partner"] > 0
        assert every[rel]["unplaced_seen"] > 0.5  # a smooth texture's cuts are found again
        assert none[rel]["unplaced_with_partner"] == 0 and none[rel]["unplaced_seen"] == 0
    assert "unplaced_seen" not in bench_mosaic.half_tile_test(images, tables)["LR"]
