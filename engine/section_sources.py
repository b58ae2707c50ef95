"""What section.py reads: a SEG-Y file (datasets.segy), a section as a PNG or a ``.npy`` array, or an assembled
mosaic of the dataset's tiles. Every source answers the same few questions: its kind (``2d`` or ``3d``), its lines
(``line(direction, k)`` -> (samples, traces) amplitudes), a bounded sample of traces for the amplitude clip, and
whether its values are already 8-bit grey (a PNG of the competition's kind, a mosaic: used as they are).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets import segy
from tgs import TILE
from tgs.errors import DataError, UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class ArraySection:
    """A 2D section held as an array (rows: depth, columns: traces)."""

    path: str
    data: np.ndarray
    what: str
    valid: np.ndarray | None = None  # (rows, cols) bool: where the section has data (a mosaic's filled cells)

    kind = "2d"

    @property
    def grey(self) -> bool:
        return self.data.dtype == np.uint8

    @property
    def shape(self) -> tuple:
        return (self.data.shape[1], self.data.shape[0])  # (traces, samples) as a 2D SEG-Y

    def lines(self, direction: str = "inline") -> int:
        return 1

    def line(self, direction: str = "inline", k: int = 0) -> np.ndarray:
        return np.asarray(self.data)

    def sample_traces(self, limit: int) -> np.ndarray:
        cols = np.unique(np.linspace(0, self.data.shape[1] - 1, min(limit, self.data.shape[1])).round().astype(int))
        return np.asarray(self.data[:, cols], np.float32).T

    def describe(self) -> str:
        return f"{self.what} of {self.data.shape[0]} x {self.data.shape[1]} pixels (depth x traces)"

    def close(self) -> None:
        pass


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


def read_png(path: Path) -> ArraySection:
    """A grey (or colour, converted) PNG section; 8-bit stays grey as it is, 16-bit goes through the clip."""
    import cv2

    raw = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"{path} is not a readable PNG (corrupt or truncated)")
    if raw.ndim == 3:
        raw = cv2.cvtColor(np.ascontiguousarray(raw[..., :3]), cv2.COLOR_BGR2GRAY) if raw.dtype == np.uint8 else \
            raw[..., :3].mean(axis=2).astype(np.float32)
    if raw.dtype not in (np.uint8, np.uint16, np.float32):
        raise DataError(f"{path}: PNG pixel type {raw.dtype}, expected 8 or 16 bit")
    return ArraySection(str(path), raw if raw.dtype == np.uint8 else raw.astype(np.float32), "PNG section")


def read_npy(path: Path) -> ArraySection:
    """A 2D ``.npy`` array of amplitudes (depth down the rows), memory-mapped (no pickle)."""
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} is not a readable .npy array ({str(exc).splitlines()[0]})") from None
    if data.ndim != 2:
        raise DataError(f"{path}: a .npy section must be 2D (depth x traces), this one has shape {data.shape}")
    if data.size == 0:
        raise DataError(f"{path} is empty (shape {data.shape})")
    if not (np.issubdtype(data.dtype, np.number) and not np.issubdtype(data.dtype, np.complexfloating)):
        raise DataError(f"{path}: a .npy section holds real numbers, not {data.dtype}")
    return ArraySection(str(path), data if data.dtype == np.uint8 else np.asarray(data, np.float32), ".npy section")


def open_input(path: str | os.PathLike):
    """The section or volume of ``--input``: PNG and ``.npy`` by their content's signature, anything else as
    SEG-Y (one DataError line when it is none of them)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--input {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    head = _magic(path)
    if head.startswith(PNG_MAGIC):
        return read_png(path)
    if head.startswith(NPY_MAGIC):
        return read_npy(path)
    return segy.open_segy(path)


@dataclass
class MosaicTiles:
    """A dataset's mosaics (mosaics.csv, validated against the dataset's ids) and where its tiles are read."""

    mosaics: object  # tgs.mosaic.Mosaics
    layout: object  # datasets.kaggle.Layout
    train_ids: np.ndarray

    @classmethod
    def read(cls, mosaics_csv: str, data_dir: str) -> "MosaicTiles":
        from datasets.kaggle import Layout, read_sample_submission, read_train_csv
        from tgs.mosaic import Mosaics

        layout = Layout.of(data_dir)
        layout.require("train_csv", "train_images")
        train_ids = read_train_csv(layout.train_csv)["id"].to_numpy(str)
        test_ids = (np.asarray(read_sample_submission(layout.sample_submission), str)
                    if layout.sample_submission.is_file() else np.zeros(0, str))
        return cls(Mosaics.read(mosaics_csv, known_ids=np.concatenate([train_ids, test_ids])), layout, train_ids)

    def assemble(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8, valid bool, ids, (row, col) cells) of one mosaic's grid (tgs.mosaic.Mosaics.grids): its
        tiles placed in their cells, the cells without a tile filled with the tiles' mean grey (not valid)."""
        from tgs.png import read_pngs

        cells = np.argwhere(grid >= 0)
        ids = self.mosaics.ids[grid[grid >= 0]]
        in_train = np.isin(ids, self.train_ids)
        tiles = np.zeros((len(ids), TILE, TILE), np.uint8)
        if in_train.any():
            tiles[in_train] = read_pngs(self.layout.train_images, ids[in_train])
        if (~in_train).any():
            tiles[~in_train] = read_pngs(self.layout.test_images, ids[~in_train])
        rows, cols = grid.shape
        image = np.full((rows * TILE, cols * TILE), int(round(tiles.mean())) if len(tiles) else 0, np.uint8)
        valid = np.zeros(image.shape, bool)
        image.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3)[cells[:, 0], cells[:, 1]] = tiles  # a view
        valid.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3)[cells[:, 0], cells[:, 1]] = True
        return image, valid, ids, cells


def cut_cells(section: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(N, 101, 101) of a mosaic-shaped array at (row, col) ``cells``."""
    rows, cols = section.shape[0] // TILE, section.shape[1] // TILE
    return section.reshape(rows, TILE, cols, TILE).transpose(0, 2, 1, 3)[cells[:, 0], cells[:, 1]]


def mosaic_section(mosaics_csv: str, number: int, data_dir: str) -> ArraySection:
    """Mosaic ``number`` of ``mosaics.csv`` assembled from the dataset's train and test images (the cells without
    a tile are filled with the tiles' mean grey and marked as no data)."""
    source = MosaicTiles.read(mosaics_csv, data_dir)
    grids = source.mosaics.grids()
    if not 0 <= number < len(grids):
        raise UserError(f"--mosaic {number}: {mosaics_csv} has mosaics 0 .. {len(grids) - 1}")
    image, valid, ids, _ = source.assemble(grids[number])
    rows, cols = grids[number].shape
    return ArraySection(mosaics_csv, image, f"mosaic {number} ({len(ids)} tiles in {rows} x {cols} cells)", valid)
