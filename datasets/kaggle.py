"""Reading the competition's data in Kaggle's folder layout.

::

    DATA/train/images/<id>.png     101x101 seismic images (8-bit RGB with three equal channels, or L)
    DATA/train/masks/<id>.png      salt masks (8-bit 0/255 or 16-bit 0/65535; binarised with > 0)
    DATA/test/images/<id>.png      the 18000 test images
    DATA/train.csv                 id,rle_mask (an empty field is an empty mask)
    DATA/depths.csv                id,z for train and test ids
    DATA/sample_submission.csv     id,rle_mask: the test ids in submission order

Whole sets load into compact arrays (uint8 images, bool masks; decoding by :mod:`tgs.png`), and optionally into a
cache file next to the data, keyed by the files' names, sizes and times. The true masks of a train.csv or of a
folder of mask PNGs alone are read by :func:`tgs.submission.read_truth`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tgs import TILE
from tgs.errors import DataError, UserError
from tgs.io import atomic_path, read_csv_strings, read_npz
from tgs.png import read_pngs, stems
from tgs.progress import bar

CACHE_DIR = ".cache"

LAYOUT_HELP = (
    "expected Kaggle's layout: DATA/train/images/*.png, DATA/train/masks/*.png, DATA/test/images/*.png, "
    "DATA/train.csv, DATA/depths.csv, DATA/sample_submission.csv (unpack the competition zip with "
    "`python -m datasets.prepare ZIP --out DATA`, or make a synthetic set with "
    "`python -m datasets.synthetic --out DATA`)"
)


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset folder in Kaggle's layout."""

    root: Path

    @classmethod
    def of(cls, root: str | os.PathLike) -> "Layout":
        return cls(Path(root))

    @property
    def train_images(self) -> Path:
        return self.root / "train" / "images"

    @property
    def train_masks(self) -> Path:
        return self.root / "train" / "masks"

    @property
    def test_images(self) -> Path:
        return self.root / "test" / "images"

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def depths_csv(self) -> Path:
        return self.root / "depths.csv"

    @property
    def sample_submission(self) -> Path:
        return self.root / "sample_submission.csv"

    def require(self, *parts: str) -> None:
        """Raise a DataError naming the first missing part ('train_images', 'train_csv', ...)."""
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist; {LAYOUT_HELP}")
        for part in parts:
            path = getattr(self, part)
            ok = path.is_dir() if part.endswith(("images", "masks")) else path.is_file()
            if not ok:
                raise DataError(f"{path} is missing; {LAYOUT_HELP}")


def check_fingerprint(model, stored: str | None, fingerprint: str, data, why: str) -> None:
    """Refuse ``model`` whose checkpoint says it was trained on other data (``stored``, its meta's
    ``data_fingerprint``; None in older files, which pass) than ``data`` (:meth:`TrainSet.fingerprint`)."""
    if stored not in (None, fingerprint):
        raise UserError(f"{model} was trained on other data than {data} (data fingerprint {stored}, not "
                        f"{fingerprint}): {why}")


def _digest(ids: np.ndarray, *arrays: np.ndarray) -> str:
    """sha1 (16 hex digits) of the ids and the arrays' bytes: a data set's fingerprint."""
    h = hashlib.sha1()
    h.update("\n".join(ids.tolist()).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]


@dataclass
class TrainSet:
    ids: np.ndarray  # (N,) str, in train.csv order
    images: np.ndarray  # (N, 101, 101) uint8
    masks: np.ndarray  # (N, 101, 101) bool
    depths: np.ndarray  # (N,) float32, nan where unknown

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """A digest of the ids, images and masks: what a run records so that its results are reused only on the
        same data (a synthetic set and the real one, or two versions of a set, differ)."""
        return _digest(self.ids, self.images, np.packbits(self.masks))


@dataclass
class TestSet:
    ids: np.ndarray  # (M,) str, in sample_submission.csv order
    images: np.ndarray  # (M, 101, 101) uint8
    depths: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """A digest of the ids and images, as :meth:`TrainSet.fingerprint`: new test images under the same ids
        differ."""
        return _digest(self.ids, self.images)


# -- CSV files ------------------------------------------------------------------------------------------------------
def read_csv(path: str | os.PathLike, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV of strings whose header must be exactly ``columns``; empty fields stay empty strings."""
    return read_csv_strings(path, columns, missing=f"is missing; {LAYOUT_HELP}")


def unique_ids(df: pd.DataFrame, path) -> np.ndarray:
    ids = df["id"].to_numpy(dtype=str)
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise DataError(f"{path}: {int(dup.sum())} duplicated ids, first {ids[dup][0]}")
    empty = ids == ""
    if empty.any():
        raise DataError(f"{path}: row {int(np.argmax(empty)) + 2} has an empty id")
    return ids


def read_train_csv(path) -> pd.DataFrame:
    df = read_csv(path, ("id", "rle_mask"))
    unique_ids(df, path)
    return df


def read_depths(path) -> pd.Series:
    """Depth z per id (float); a missing depths.csv is an error only where depths are needed."""
    df = read_csv(path, ("id", "z"))
    z = pd.to_numeric(df["z"], errors="coerce")
    if z.isna().any():
        row = int(np.argmax(z.isna().to_numpy()))
        raise DataError(f"{path}: id {df['id'].iloc[row]} has a depth {df['z'].iloc[row]!r} that is not a number")
    return pd.Series(z.to_numpy(np.float32), index=df["id"].to_numpy(str))


def read_sample_submission(path) -> np.ndarray:
    df = read_csv(path, ("id", "rle_mask"))
    return unique_ids(df, path)


def depths_for(layout: Layout, ids: np.ndarray) -> np.ndarray:
    if not layout.depths_csv.is_file():
        return np.full(len(ids), np.nan, np.float32)
    z = read_depths(layout.depths_csv)
    return z.reindex(ids).to_numpy(np.float32)


# -- cache ----------------------------------------------------------------------------------------------------------
def _fingerprint(ids: Sequence[str], folders: Sequence[Path]) -> str:
    h = hashlib.sha1()
    h.update("\n".join(ids).encode())
    for folder in folders:
        for ident in ids:
            st = os.stat(folder / f"{ident}.png")
            h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _cached(layout: Layout, name: str, ids: Sequence[str], folders: Sequence[Path], load, use_cache: bool,
            names: Sequence[str] = ("images",)):
    if not use_cache:
        return load()
    cache = layout.root / CACHE_DIR / f"{name}-{_fingerprint(ids, folders)}.npz"
    if cache.is_file():
        def tiles(declared: dict) -> None:  # one 101x101 byte (uint8 image, bool mask) tile per id, or rebuild
            if any(d.shape != (len(ids), TILE, TILE) or d.dtype.itemsize != 1 for d in declared.values()):
                raise DataError(f"{cache}: not a cache of these {len(ids)} tiles")

        try:
            return read_npz(cache, names, "cache", tiles)
        except (OSError, DataError):
            pass  # unreadable cache: rebuild it
    arrays = load()
    try:
        for old in cache.parent.glob(f"{name}-*.npz"):
            old.unlink()
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except (OSError, UserError):
        pass  # a read-only or full data folder simply has no cache
    return arrays


# -- whole sets -----------------------------------------------------------------------------------------------------
def load_train(root: str | os.PathLike, cache: bool = True, workers: int | None = None) -> TrainSet:
    """The training set in train.csv order, masks from the PNG masks folder (validated against images)."""
    layout = Layout.of(root)
    layout.require("train_csv", "train_images", "train_masks")
    df = read_train_csv(layout.train_csv)
    ids = df["id"].to_numpy(str)
    images_found = stems(layout.train_images)
    masks_found = stems(layout.train_masks)
    orphan = sorted(masks_found - images_found)
    if orphan:
        raise DataError(f"id {orphan[0]}: mask file {layout.train_masks / (orphan[0] + '.png')} has no image in "
                        f"{layout.train_images} ({len(orphan)} such masks)")
    for found, folder, kind in ((images_found, layout.train_images, "image"),
                                (masks_found, layout.train_masks, "mask")):
        missing = ids[~np.isin(ids, list(found))]
        if missing.size:
            raise DataError(f"id {missing[0]}: {kind} file {folder / (missing[0] + '.png')} is missing "
                            f"({len(missing)} of the {len(ids)} ids in {layout.train_csv} have no {kind})")

    def load():
        with bar(desc=f"decode {layout.root} train", total=2 * len(ids), unit="png") as b:
            return {"images": read_pngs(layout.train_images, ids, "image", workers, b.update),
                    "masks": read_pngs(layout.train_masks, ids, "mask", workers, b.update)}

    arrays = _cached(layout, "train", ids, (layout.train_images, layout.train_masks), load, cache, ("images", "masks"))
    return TrainSet(ids, arrays["images"], arrays["masks"], depths_for(layout, ids))


def load_test(root: str | os.PathLike, cache: bool = True, workers: int | None = None) -> TestSet:
    """The test set in sample_submission.csv order."""
    layout = Layout.of(root)
    layout.require("sample_submission", "test_images")
    ids = read_sample_submission(layout.sample_submission)
    found = stems(layout.test_images)
    missing = ids[~np.isin(ids, list(found))]
    if missing.size:
        raise DataError(f"id {missing[0]}: test image {layout.test_images / (missing[0] + '.png')} is missing "
                        f"({len(missing)} of the {len(ids)} ids in {layout.sample_submission})")

    def load():
        with bar(desc=f"decode {layout.root} test", total=len(ids), unit="png") as b:
            return {"images": read_pngs(layout.test_images, ids, "image", workers, b.update)}

    arrays = _cached(layout, "test", ids, (layout.test_images,), load, cache)
    return TestSet(ids, arrays["images"], depths_for(layout, ids))
