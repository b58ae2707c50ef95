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
        assert found["LR"][name][0] == 0 and found["LR"][name][1] < 1
    unplaced = mosaic.Assembly(Mosaics([], [], [], []), result.pairs, result.candidates, result.tables)
    left = bench_mosaic.leftover_test(ids, images, unplaced, descriptors)
    assert left["LR"]["unplaced"][0] == 1 and left["LR"]["unplaced"][1] < 1  # the pair, were it left out
    assert left["LR"]["border"] == (0, 0.0)  # no mosaic, no border


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
    assert test["LR"]["border"][0] == 1 and test["LR"]["border"][1] < 1
    assert test["LR"]["unplaced"][0] == 0
    # with a true layout, the match seen is counted as true; with a wrong one, it is not
    truth = Mosaics(ids[:3], [0, 0, 0], [0, 0, 0], [0, 1, 2])
    assert bench_mosaic.leftover_test(ids, images, first_two, descriptors, truth)["LR"]["border"][2] == 1
    wrong = Mosaics(ids[:3], [0, 0, 0], [0, 0, 0], [0, 2, 1])
    assert bench_mosaic.leftover_test(ids, images, first_two, descriptors, wrong)["LR"]["border"][2] == 0


def test_the_benchmark_prints_its_table_on_a_small_synthetic_set(tmp_path, capsys):
    synthetic.write_dataset(tmp_path / "data", n_train=160, n_test=80, seed=2)
    assert bench_mosaic.measure(argparse.Namespace(ratio=None), str(tmp_path / "data")) == 0
    out = capsys.readouterr().out
    for row in ("tiles placed", "half-tile test LR", "holes (empty cells", "unplaced tiles' mutual best matches",
                "mosaic borders'", "precision", "mosaic folds (k=10)"):
        assert row in out, row
