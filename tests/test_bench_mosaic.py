"""The mosaic benchmark's truth-free checks on hand-built sections: the hole test finds a tile left out of a mosaic's
cell and finds nothing where the cell's tile is absent from the set; the leftover test counts a pair left out."""
import numpy as np

from bench import bench_mosaic
from datasets import mosaic
from tests.test_mosaic import cut, ids_for, textured
from tgs.mosaic import Mosaics


def test_the_hole_test_finds_a_missed_tile_and_nothing_in_a_true_hole():
    rng = np.random.default_rng(4)
    tiles, pos = cut(textured(rng, 3, 3))  # tile 4 is the centre
    others = cut(textured(rng, 2, 6, sigma=1.5))[0][[0, 2, 4, 7, 9, 11]]  # tiles of another section, none adjacent
    images = np.concatenate([tiles, others])
    ids = ids_for(len(images))
    ring = [i for i in range(9) if i != 4]
    found = Mosaics(ids[ring], np.zeros(8, np.int64), pos[ring, 0], pos[ring, 1])  # the centre left out
    missed = bench_mosaic.hole_test(ids, images, found)
    assert missed["holes"] == 1 and missed["holes_fillable"] == 1
    assert missed["control"] == 8 and missed["control_found"] == 8 and missed["control_null"] == 0
    absent = bench_mosaic.hole_test(np.delete(ids, 4), np.delete(images, 4, axis=0), found)  # no centre in the set
    assert absent["holes"] == 1 and absent["holes_fillable"] == 0


def test_the_leftover_test_sees_a_pair_left_unplaced_and_none_by_chance():
    rng = np.random.default_rng(6)
    pair = cut(textured(rng, 1, 2))[0]  # tile 0 left of tile 1
    others = cut(textured(rng, 3, 4, sigma=1.5))[0][[0, 2, 5, 7, 8, 10]]  # none next to another
    images = np.concatenate([pair, others])
    ids = ids_for(len(images))
    result = mosaic.assemble(ids, images)
    assert sorted(result.mosaics.ids) == ["t0000", "t0001"]
    found = bench_mosaic.leftover_test(ids, images, result)
    assert found["LR"][0] == 0 and found["LR"][1] < 1  # nothing left: nothing seen, next to nothing expected
    unplaced = mosaic.Assembly(Mosaics([], [], [], []), result.pairs, result.candidates, result.tables)
    left = bench_mosaic.leftover_test(ids, images, unplaced)
    assert left["LR"][0] == 1 and left["LR"][1] < 1  # the pair, were it left out, is the one seen
