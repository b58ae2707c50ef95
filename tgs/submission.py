"""Kaggle submission files: ``id,rle_mask``, one row per image, an empty field for an empty mask.

Writing is atomic. Reading validates the header, the ids and (when decoded) every RLE string, and aligns the rows
to a list of expected ids, reporting how many are missing or unexpected and naming the first few.

    python -m tgs.submission --masks DATA/train/masks --out perfect.csv        # encode a folder of masks
    python -m tgs.submission --empty --ids DATA/train.csv --out empty.csv      # every mask empty

A train.csv has the same format, so :func:`read_truth` reads true masks from it (or from a folder of mask PNGs).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tgs import rle
from tgs.errors import DataError, UserError, cli, excerpt, few
from tgs.io import atomic_open, read_csv_strings

HEADER = ("id", "rle_mask")
MAX_ID = 255  # characters in an id at most: an id names its image file, and a file name has at most 255 bytes


def write(path: str | Path, ids: Sequence[str], masks: np.ndarray | None = None,
          rles: Sequence[str] | None = None, atomic: bool = True) -> None:
    """Write a submission from masks (N, 101, 101) or from ready RLE strings, atomically (``atomic=False``:
    straight to ``path``, for a caller that commits a set of files itself, tgs.io.atomic_paths)."""
    if (masks is None) == (rles is None):
        raise ValueError("give exactly one of masks or rles")
    if rles is None:
        rles = rle.encode(masks)
    if len(rles) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(rles)} masks")
    with (atomic_open(path, "w", newline="") if atomic else open(path, "w", newline="")) as fh:
        pd.DataFrame({"id": np.asarray(ids, dtype=str), "rle_mask": list(rles)}).to_csv(fh, index=False)


def read(path: str | Path, what: str = "submission") -> pd.DataFrame:
    """Read and check a submission's structure (or a train.csv's: ``what``): header ``id,rle_mask``, non-empty
    unique ids.

    The file may come from anywhere: before pandas reads it, :func:`check_lines` bounds every row by the longest
    valid one, so a hostile file costs memory in proportion to its valid content, not to one giant field.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    check_lines(path)
    df = read_csv_strings(path, HEADER)
    long = np.flatnonzero(df["id"].str.len().to_numpy() > MAX_ID)  # before a numpy array of N x the longest id
    if long.size:
        raise DataError(f"{path}: row {long[0] + 2} has an id longer than a file name ({MAX_ID} characters): "
                        f"{excerpt(df['id'].iloc[long[0]])}")
    ids = df["id"].to_numpy(str)
    if (ids == "").any():
        raise DataError(f"{path}: row {int(np.argmax(ids == '')) + 2} has an empty id")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise DataError(f"{path}: {int(dup.sum())} ids appear more than once: {few(pd.unique(ids[dup]))}")
    return df


def check_lines(path: str | Path, shape: tuple[int, int] = rle.SHAPE, block: int = 1 << 20) -> None:
    """Refuse a file with a line longer than any valid row of a submission of ``shape`` masks, or with a quoted
    field across lines: a DataError naming the file and the line.

    The file is read ``block`` bytes at a time, so a giant field is refused once about the longest valid row has
    been read (pandas would hold it several times over before any later check could see it). Lines end at
    ``\n``, ``\r\n`` or ``\r``, as for pandas.
    """
    limit = MAX_ID + rle.longest(shape) + 5  # an id, a comma, an RLE, and quotes around both fields
    too_long = (f"is longer than any valid submission row (more than {limit} bytes: an id and the longest RLE of "
                f"a {shape[0]}x{shape[1]} mask)")
    line, current, odd = 1, 0, 0  # number of the current line, its bytes so far, 1 after an odd number of quotes
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            if chunk.endswith(b"\r"):
                chunk += fh.read(1)  # whether this '\r' ends a line depends on the next byte: keep them together
            raw = np.frombuffer(chunk, dtype=np.uint8)
            lf, cr, quote = raw == ord("\n"), raw == ord("\r"), raw == ord('"')
            breaks = np.flatnonzero(lf | cr)
            real = (lf | (cr & np.append(~lf[1:], True)))[breaks]  # the '\r' of a '\r\n' ends no line
            number = line + np.cumsum(real) - real  # line number of the text before each break
            length = np.diff(breaks, prepend=-1 - current) - 1
            in_quotes = (np.cumsum(quote, dtype=np.uint8)[breaks] + odd) % 2 == 1  # mod 256 keeps the parity
            bad = np.flatnonzero((length > limit) | in_quotes)
            if bad.size:
                j = bad[0]
                what = ("has an unclosed quote (a submission row is an id and an RLE on one line)" if in_quotes[j]
                        else too_long)
                raise DataError(f"{path}: line {number[j]} {what}")
            line += int(real.sum())
            odd = (odd + int(np.count_nonzero(quote))) % 2
            current = len(chunk) - int(breaks[-1]) - 1 if breaks.size else current + len(chunk)
            if current > limit:
                raise DataError(f"{path}: line {line} {too_long}")


def match_ids(have, expected, path, source: str, subset: bool = False) -> np.ndarray:
    """Row positions in ``have`` of the ``expected`` ids, in ``expected`` order: what a submission or a
    probability file (``path``) must hold to stand for ``source``. An id not in ``source``, or a missing one
    (unless ``subset``: then the expected ids it has, in order), is a DataError naming the first few."""
    have = pd.Index(np.asarray(have, dtype=str))
    want = pd.Index(np.asarray(expected, dtype=str))
    extra = have.difference(want, sort=False)
    if len(extra):
        raise DataError(f"{path}: {len(extra)} ids are not in {source}: {few(extra)}")
    missing = want.difference(have, sort=False)
    if len(missing) and not subset:
        raise DataError(f"{path}: {len(missing)} of the {len(want)} ids of {source} are missing: {few(missing)}")
    keep = want[want.isin(have)]
    if len(keep) == 0:
        raise DataError(f"{path}: none of its ids is in {source}")
    return have.get_indexer(keep)


def align(df: pd.DataFrame, expected: np.ndarray, path, source: str, subset: bool = False) -> pd.DataFrame:
    """Rows of ``df`` in the order of ``expected`` ids; missing or unexpected ids are an error.

    With ``subset`` the submission may hold fewer ids: the result keeps the expected ids it has, in order.
    """
    return df.iloc[match_ids(df["id"].to_numpy(str), expected, path, source, subset)].reset_index(drop=True)


def decode(df: pd.DataFrame) -> np.ndarray:
    """The masks of a (validated) submission, checking every RLE string."""
    ids = df["id"].to_numpy(str)
    return rle.decode(df["rle_mask"].tolist(), ids)


def read_truth(path: str | Path, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """True masks from a train.csv (RLE) or from a folder of mask PNGs: (ids, masks (N, 101, 101) bool); a
    folder's ids are its files' names, sorted."""
    from tgs import png

    path = Path(path)
    if path.is_dir():
        if path.name == "images" and (path.parent / "masks").is_dir():
            raise DataError(f"{path} holds the seismic images, not masks: give {path.parent / 'masks'} (or the "
                            "train.csv beside the data)")
        ids = np.array(sorted(png.stems(path)), dtype=str)
        if len(ids) == 0:
            raise DataError(f"{path}: no mask PNGs in this folder")
        return ids, png.read_pngs(path, ids, "mask", workers)
    df = read(path, "truth file")
    return df["id"].to_numpy(str), decode(df)


def images_beside(truth: str | Path) -> Path:
    """The training images folder of a truth source (:func:`read_truth`'s argument): DATA/train/images next to
    DATA/train.csv, or next to the DATA/train/masks folder."""
    truth = Path(truth)
    return truth.parent / "images" if truth.is_dir() else truth.parent / "train" / "images"


def build_parser():
    """The parser of ``python -m tgs.submission``."""
    from tgs.cliargs import ArgumentParser

    p = ArgumentParser(description="Write a submission from a folder of masks, or an all-empty one.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--masks", help="folder of mask PNGs: encode them (a perfect submission for that set)")
    src.add_argument("--empty", action="store_true", help="every mask empty (the all-empty baseline)")
    p.add_argument("--ids", help="with --empty: a CSV whose 'id' column lists the ids (train.csv, sample_submission)")
    p.add_argument("--out", required=True, help="the submission CSV to write (id,rle_mask)")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from tgs.io import check_output

    check_output(args.out, "--out", {"--ids": args.ids, "--masks": args.masks})
    if args.empty:
        if not args.ids:
            raise UserError("--empty needs --ids CSV (a train.csv or sample_submission.csv)")
        ids = read(args.ids, "--ids file")["id"].to_numpy(str)
        write(args.out, ids, rles=[""] * len(ids))
    else:
        ids, masks = read_truth(args.masks)
        write(args.out, ids, masks=masks)
    print(f"wrote {args.out} ({len(ids)} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
