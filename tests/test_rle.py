"""RLE codec: hand-computed cases, round trips, an independent loop encoder, and every validation error."""
import numpy as np
import pytest

from tgs import rle
from tgs.errors import UserError


def reference_encode(mask: np.ndarray) -> str:
    """Plain loop over pixels in column-major order, written independently of tgs.rle."""
    h, w = mask.shape
    out, run_start, pixel = [], None, 0
    for col in range(w):
        for row in range(h):
            pixel += 1
            if mask[row, col] and run_start is None:
                run_start = pixel
            elif not mask[row, col] and run_start is not None:
                out += [run_start, pixel - run_start]
                run_start = None
    if run_start is not None:
        out += [run_start, pixel + 1 - run_start]
    return " ".join(map(str, out))


def test_hand_computed_3x3():
    m = np.array([[1, 0, 0],
                  [1, 0, 1],
                  [0, 0, 1]], bool)
    # column 0 -> pixels 1, 2; column 1 empty; column 2 -> pixels 8, 9
    assert rle.encode(m[None]) == ["1 2 8 2"]
    assert np.array_equal(rle.decode(["1 2 8 2"], shape=(3, 3))[0], m)


def test_hand_computed_101():
    m = np.zeros((4, 101, 101), bool)
    m[0, 0, 1] = True  # first pixel of the second column
    m[1] = True
    m[2, 100, 0] = m[2, 0, 1] = True  # a run that wraps from the bottom of column 0 to the top of column 1
    m[3, 100, 100] = True  # the last pixel
    assert rle.encode(m) == ["102 1", "1 10201", "101 2", "10201 1"]


def test_empty_and_single_mask_shapes():
    assert rle.encode(np.zeros((2, 101, 101))) == ["", ""]
    assert rle.encode(np.zeros((101, 101))) == [""]
    assert rle.encode(np.zeros((0, 101, 101))) == []
    assert rle.decode([]).shape == (0, 101, 101)
    assert not rle.decode(["", ""]).any()


def test_nonzero_values_count_as_salt():
    m = np.zeros((1, 101, 101), np.uint16)
    m[0, 5, 0] = 65535
    assert rle.encode(m) == ["6 1"]


@pytest.mark.parametrize("p", [0.02, 0.5, 0.97])
def test_matches_reference_and_round_trips(p):
    rng = np.random.default_rng(int(p * 100))
    masks = rng.random((30, 101, 101)) < p
    masks[::4] = False  # empty masks between non-empty ones
    masks[1] = True
    got = rle.encode(masks)
    assert got == [reference_encode(m) for m in masks]
    assert np.array_equal(rle.decode(got), masks)
    # canonical strings survive decode -> encode unchanged
    assert rle.encode(rle.decode(got)) == got


def test_round_trip_blobs_non_square():
    rng = np.random.default_rng(3)
    masks = np.zeros((5, 7, 13), bool)
    masks[:, 2:5, 3:9] = rng.random((5, 3, 6)) < 0.8
    s = rle.encode(masks)
    assert s == [reference_encode(m) for m in masks]
    assert np.array_equal(rle.decode(s, shape=(7, 13)), masks)


def test_decode_accepts_touching_runs():
    a = rle.decode(["1 2 3 2"])
    b = rle.decode(["1 4"])
    assert np.array_equal(a, b) and a.sum() == 4


@pytest.mark.parametrize("text,fragment", [
    ("1 a", "'a' is not a positive integer"),
    ("1.5 2", "'1.5' is not a positive integer"),
    ("-1 2", "'-1' is not a positive integer"),
    ("1 2 5", "odd number of values (3)"),
    ("0 2", "below 1"),
    ("5 0", "below 1"),
    ("10 2 1 2", "out of order"),
    ("1 5 3 2", "overlaps"),
    ("10200 5", "past the last pixel 10201"),
    ("99999999999999999999999 1", "past the last pixel"),
])
def test_decode_errors_name_the_id(text, fragment):
    with pytest.raises(rle.RLEError) as err:
        rle.decode(["1 1", text], ids=["good", "badid"])
    msg = str(err.value)
    assert msg.startswith("id badid:"), msg
    assert fragment in msg, msg
    assert isinstance(err.value, UserError)


def test_decode_error_without_ids_names_the_row():
    with pytest.raises(rle.RLEError, match="row 2"):
        rle.decode(["", "1 1", "3"])
