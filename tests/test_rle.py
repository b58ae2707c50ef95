"""RLE codec: hand-computed cases, round trips, an independent loop encoder, and every validation error."""
import numpy as np
import pytest

from tgs import rle
from tgs.errors import UserError, excerpt


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


# -- bounds: the longest valid RLE ----------------------------------------------------------------------------------
def test_longest_101x101_by_hand():
    # One-pixel runs on the odd pixels 1, 3, ..., 10201: 5101 runs. Digits of the starts: 5 one-digit (1..9),
    # 45 two-digit, 450 three-digit, 4500 four-digit, 101 five-digit (10001..10201) = 19950; plus 5101 lengths '1'
    # and 2 * 5101 - 1 spaces.
    assert rle.longest((101, 101)) == 19950 + 5101 + 10201 == 35252
    m = np.zeros(10201, bool)
    m[::2] = True
    m = m.reshape(101, 101).T  # column-major pixel order
    (s,) = rle.encode(m)
    assert len(s) == 35252 and s.endswith(" 10199 1 10201 1")
    assert np.array_equal(rle.decode([s])[0], m)


@pytest.mark.parametrize("shape", [(3, 4), (4, 4), (3, 5), (1, 11)])
def test_longest_is_the_longest_of_all_masks(shape):
    """Every mask of a small shape, by brute force: the bound is reached and never exceeded."""
    hw = shape[0] * shape[1]
    every = (np.arange(2 ** hw)[:, None] >> np.arange(hw)) & 1  # all 2**hw masks, one per row
    masks = every.reshape(-1, shape[1], shape[0]).transpose(0, 2, 1)  # bits in column-major pixel order
    assert max(map(len, rle.encode(masks))) == rle.longest(shape)


# -- hostile input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,fragment", [
    ("1234567890" * 2000, "RLE value '1234567890123456789012345678901234567890...' (20000 characters) has 20000 "
                          "digits, past the last pixel 10201"),
    ("123456 1", "RLE value '123456' has 6 digits, past the last pixel 10201 of a 101x101 image"),
    ("1 1 " * 9000, "is longer than any valid RLE of a 101x101 image (at most 35252 characters)"),
    ("1 2\u00b3", "RLE value '2\u00b3' is not a positive integer ('\u00b3' at character 4"),  # superscript three
    ("\u0661 \u0662", "RLE value '\u0661' is not a positive integer ('\u0661' at character 1"),  # Arabic-Indic
    ("\uff11 \uff12", "RLE value '\uff11' is not a positive integer"),  # full-width digits
    ("1\t2", "RLE value '1\\t2' is not a positive integer ('\\t' at character 2"),
    ("1 2\n3 4", "RLE value '2\\n3' is not a positive integer ('\\n' at character 4"),
    ("1 2\u3000", "'\\u3000' at character 4"),  # an ideographic space
    ("+1 2", "RLE value '+1' is not a positive integer"),
    ("-1 2", "RLE value '-1' is not a positive integer"),
    ("1  2", "RLE '1  2' has two spaces in a row at character 2"),
    (" 1 2", "RLE ' 1 2' starts with a space"),
    ("1 2 ", "RLE '1 2 ' ends with a space"),
    (" ", "RLE ' ' starts with a space"),
])
def test_hostile_strings_are_one_short_line(text, fragment):
    with pytest.raises(rle.RLEError) as err:
        rle.decode(["1 1", text, "2 2"], ids=["good", "badid", "other"])
    msg = str(err.value)
    assert msg.startswith("id badid: "), msg
    assert fragment in msg, msg
    assert "\n" not in msg and len(msg) < 200, msg


def test_huge_string_is_refused_before_tokenising():
    """Refused from its length alone: the decoder allocates next to nothing (tokenising the 5 MB string would
    take several times its size)."""
    import tracemalloc

    rles = ["1 1"] * 1000
    rles[700] = "7" * 5_000_000
    ids = [f"id{i}" for i in range(1000)]
    tracemalloc.start()
    try:
        with pytest.raises(rle.RLEError) as err:
            rle.decode(rles, ids=ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak
    msg = str(err.value)
    assert msg.startswith("id id700: RLE '7777777777") and "(5000000 characters) is longer than" in msg
    assert len(msg) < 200


def test_a_hostile_id_is_quoted_short():
    with pytest.raises(rle.RLEError) as err:
        rle.decode(["1 a"], ids=["x" * 1000])
    assert str(err.value).startswith("id 'xxxxxxxxxx") and "(1000 characters)" in str(err.value)
    with pytest.raises(rle.RLEError, match=r"^id 'a\\nb': "):
        rle.decode(["1 a"], ids=["a\nb"])


def test_blocks_give_the_same_masks_and_errors():
    """decode parses its input in blocks of strings; tiny blocks (many boundaries) change nothing."""
    rng = np.random.default_rng(5)
    masks = rng.random((40, 101, 101)) < 0.3
    masks[::3] = False
    strings = rle.encode(masks)
    strings[7] = None  # None stands for an empty mask
    masks[7] = False
    whole = rle.decode(strings)
    assert np.array_equal(rle.decode(strings, block=50), whole) and np.array_equal(whole, masks)
    for j, bad in [(25, "1 \u00b2"), (26, "1  2"), (39, "1 2 "), (33, "1 999999")]:
        hostile = list(strings)
        hostile[j] = bad
        with pytest.raises(rle.RLEError, match=rf"^row {j}: "):
            rle.decode(hostile, block=50)


def test_leading_zeros_are_numbers():
    assert np.array_equal(rle.decode(["01 00002"]), rle.decode(["1 2"]))


@pytest.mark.parametrize("value,expected", [
    ("short", "'short'"),
    ("12345678901234567890" * 1000, "'1234567890123456789012345678901234567890...' (20000 characters)"),
    ("a\tb", "'a\\tb'"),
    (12345, "12345"),  # numbers (e.g. a YAML value) as Python writes them, unquoted
    (2.5, "2.5"),
    (list(range(100)), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1... (390 characters)"),
])
def test_excerpt(value, expected):
    assert excerpt(value) == expected


def test_excerpt_of_escapes_stays_short():
    for text in ["\t" * 100, "\x00" * 100, "\u2070" * 1000, "'\"" * 100]:
        shown = excerpt(text)
        assert "\n" not in shown and len(shown) <= 40 + 5 + len(" (1000 characters)"), shown
        assert shown.endswith(f" ({len(text)} characters)")
    assert excerpt("\t" * 20) == repr("\t" * 20)  # 40 characters of repr: not cut
