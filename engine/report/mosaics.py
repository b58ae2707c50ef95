"""Pictures of the mosaics: the largest sections assembled from their tiles (``report.py --mosaics``).

Each picture is a raster at one pixel per tile pixel, so it shows the seams as they are: the tile at (row, col)
of a mosaic's bounding box fills ``[HEADER + row * 101, HEADER + (row + 1) * 101) x [col * 101, (col + 1) * 101)``;
cells without a tile are :data:`EMPTY_CELL`. The images are grey; the train masks are outlined in :data:`TRUTH`,
the predicted masks (after the mosaic rules) in :data:`PREDICTED` (where both outlines coincide, :data:`BOTH`), and
a tile that a rule changed gets a frame in the rule's colour (:data:`RULE_COLOURS`).
A header band names the mosaic and the colours. The PNG is written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from tgs import TILE
from tgs.io import atomic_path
from tgs.mosaic import Mosaics
from tgs.mosaic_rules import MOSAIC_RULES

HEADER = 60  # pixels of the text band above the grid
MIN_WIDTH = 720  # narrow mosaics are padded on the right so that the header's text fits
FRAME = 3  # pixels of a rule's frame inside the tile's border
EMPTY_CELL = (24, 24, 40)  # RGB
TRUTH = (0, 230, 0)
PREDICTED = (255, 40, 40)
BOTH = (255, 255, 0)
RULE_COLOURS = {e.name: e.colour for e in MOSAIC_RULES.entries()}  # each rule's colour, from its registration


def outlines(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> the salt pixels with a 4-neighbour outside the salt, within each tile (the tile's border
    counts as salt, so a body that runs on across a seam gets no line along it)."""
    m = np.pad(np.asarray(masks, bool), ((0, 0), (1, 1), (1, 1)), constant_values=True)
    inner = m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:]
    return m[:, 1:-1, 1:-1] & ~inner


@dataclass
class Tiles:
    """What a picture shows of each tile of ``ids``: its image (None where not found), its true mask (train
    tiles), its predicted mask, and the rules that changed it."""

    ids: np.ndarray  # (N,) str
    images: np.ndarray  # (N, H, W) uint8
    has_image: np.ndarray  # (N,) bool
    truth: np.ndarray  # (N, H, W) bool
    has_truth: np.ndarray  # (N,) bool
    pred: np.ndarray  # (N, H, W) bool
    has_pred: np.ndarray  # (N,) bool
    changed: dict  # rule -> (N,) bool


def draw(grid: np.ndarray, tiles: Tiles, title: str) -> np.ndarray:
    """The RGB picture (uint8) of one mosaic: ``grid`` (rows x cols) holds the index into ``tiles`` of each cell,
    -1 where empty."""
    rows, cols = grid.shape
    width = max(cols * TILE, MIN_WIDTH)
    out = np.zeros((HEADER + rows * TILE, width, 3), np.uint8)
    out[HEADER:, :] = EMPTY_CELL
    r, c = np.nonzero(grid >= 0)
    k = grid[r, c]
    cells = np.zeros((len(k), TILE, TILE, 3), np.uint8)  # every placed tile at once, then put on the canvas
    cells[:] = EMPTY_CELL
    shown = tiles.has_image[k]
    cells[shown] = tiles.images[k[shown]][..., None]
    truth_line = outlines(tiles.truth[k]) & tiles.has_truth[k][:, None, None]
    pred_line = outlines(tiles.pred[k]) & tiles.has_pred[k][:, None, None]
    cells[truth_line] = TRUTH
    cells[pred_line] = PREDICTED
    cells[truth_line & pred_line] = BOTH
    border = np.zeros((TILE, TILE), bool)
    border[:FRAME], border[-FRAME:], border[:, :FRAME], border[:, -FRAME:] = True, True, True, True
    for rule, colour in RULE_COLOURS.items():  # a loop over the rules
        hit = tiles.changed.get(rule, np.zeros(len(tiles.ids), bool))[k]
        cells[hit[:, None, None] & border[None]] = colour
    canvas = np.empty((rows, TILE, cols, TILE, 3), np.uint8)
    canvas[:] = EMPTY_CELL
    canvas[r, :, c] = cells
    out[HEADER:, :cols * TILE] = canvas.reshape(rows * TILE, cols * TILE, 3)
    _header(out, title)
    return out


def _header(out: np.ndarray, title: str) -> None:
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    lines = [(title, (230, 230, 230)),
             ("outlines: train mask (green), prediction (red), both (yellow); frames: changed by a rule", (200,) * 3)]
    for i, (text, colour) in enumerate(lines):
        cv2.putText(out, text, (6, 16 + 18 * i), font, scale, colour, 1, cv2.LINE_AA)  # RGB canvas
    x = 6
    for rule, colour in RULE_COLOURS.items():
        cv2.putText(out, rule, (x, 52), font, scale, colour, 1, cv2.LINE_AA)
        x += 14 + cv2.getTextSize(rule, font, scale, 1)[0][0]


def save_rgb(rgb: np.ndarray, path) -> Path:
    """Write an RGB uint8 array as PNG atomically."""
    path = Path(path)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data.tobytes())
    return path


def largest(mosaics: Mosaics, count: int) -> list[int]:
    """The ``count`` largest mosaics (most tiles; the lower number on a tie)."""
    sizes = mosaics.sizes()
    order = np.lexsort((np.arange(len(sizes)), -sizes))
    return [int(m) for m in order[:count] if sizes[m] > 0]


def pictures(mosaics: Mosaics, tiles: Tiles, count: int, name, rules: Sequence[str] = ()) -> tuple[list, list]:
    """(summary lines, files) of the ``count`` largest mosaics, written to ``name(rank)``."""
    grids = mosaics.grids(tiles.ids)
    sizes = mosaics.sizes()
    lines, written = [], []
    for rank, m in enumerate(largest(mosaics, count), 1):
        grid = grids[m]
        inside = grid[grid >= 0]
        n_truth, n_pred = int(tiles.has_truth[inside].sum()), int(tiles.has_pred[inside].sum())
        changes = ", ".join(f"{r} {int(tiles.changed[r][inside].sum())}" for r in rules) or "no rules"
        title = (f"mosaic {m}: {sizes[m]} tiles in {grid.shape[0]} x {grid.shape[1]} cells; {n_truth} train, "
                 f"{n_pred} predicted; tiles changed: {changes}")
        written.append(save_rgb(draw(grid, tiles, title), name(rank)))
        lines.append(f"  {written[-1].name}: {title}")
    return lines, written
