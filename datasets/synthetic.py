"""A synthetic TGS salt dataset in Kaggle's exact layout, for tests, benchmarks and `make demo`.

    python -m datasets.synthetic --out DIR --train 4000 --test 18000 --seed 0

Like the real data, the tiles are cut from a few large seismic sections and split at random:

- sections: each is W x H tiles (4..12 by 3..10). In "mosaic" sections most cells are kept (some are missing),
  so most of their tiles have a kept neighbour; in the other sections only cells of one checkerboard colour are
  kept, so their tiles are isolated (their neighbours are missing, their diagonal neighbours are there). The mix
  is drawn so that about a quarter of the tiles have at least one kept neighbour, whatever the size of the set;
  with Kaggle's split (4000 train, 18000 test) about one test tile in nine is then next to a train tile (with
  a larger share of training tiles the share is larger: the split is random). Some sections end in a blank row
  (flat, single-valued tiles with empty masks, as where a real section has no data), and about a third begin at
  the sea: still water (one grey level, no salt) over a bright sea floor that crosses their top row of tiles, as
  at the top of the real sections;
- sediment: horizontal reflectors. A sparse reflectivity series per section convolved with a Ricker wavelet,
  sampled along gently folded, tilted, undulating horizons, with an amplitude that varies smoothly along each
  reflector; everything runs continuously across tile boundaries;
- salt: domes from a smooth random field with a depth trend (salt comes up from below), salt walls whose sides
  are exactly vertical from their top to the bottom of the section (so the masks of the tiles they cross have all
  rows equal), and small bodies; the threshold of the domes is set so that about 39% of the masks are empty.
  Inside, the reflectors give way to chaotic texture, and the boundary is a strong reflector (a bright rim). The
  same texture runs faintly through the sediment too (fine detail along the layers, as in real sections);
- a brightness and contrast per section with a mild jitter per tile, and pixel noise (so matching the edges of
  neighbours needs normalisation, as on the real data); depths (``z``) grow with the row inside a section;
- some masks saved as 16-bit PNGs (0/65535) and some images saved in L mode rather than RGB, like the real files.

Every field is defined at a tile's global position in its section (coarse random grids sampled bilinearly, and
hashed pixel noise filtered inside a margin around the tile), so tiles are generated independently, in blocks,
and still match their neighbours exactly.

It writes ``train/images``, ``train/masks``, ``test/images``, ``train.csv`` (RLE from the masks),
``depths.csv`` (train and test ids, shuffled) and ``sample_submission.csv`` (test ids, ``1 1`` masks), and, outside
Kaggle's layout, the true layout ``synthetic-layout.csv`` (see :func:`read_layout`).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from tgs import TILE as SIZE
from tgs import rle
from tgs.errors import UserError, cli
from tgs.io import atomic_open, read_csv_strings
from tgs.png import default_workers

MARGIN = 8  # fields are evaluated on a window of the tile plus this margin: filters and the rim see past its edge
EMPTY_FRACTION = 0.39
MOSAIC_SHARE = 0.26  # share of the tiles drawn from mosaic sections (a few of them end up without a neighbour)
BLANK_ROW_FRACTION = 0.14  # sections whose last row is blank: about 2% flat tiles
# sections whose top row holds the sea floor: still water above it (flat, no salt), a strong reflector on it; their
# top tiles are partly flat, as about 4% of the real tiles are (their tops, a median 40 rows)
SEAFLOOR_FRACTION = 0.3
SEAFLOOR_DEPTH = (10.0, 90.0)  # pixels below the section's top, at its left edge
SEAFLOOR_SLOPE = 0.03  # at most, pixels per pixel
SEAFLOOR_GAIN = (4.0, 8.0)  # the sea floor reflector's amplitude, in units of the sediment's
SALT_BELOW_SEAFLOOR = 10.0  # no salt within this many pixels below the sea floor
L_MODE_FRACTION = 0.15
MASK16_FRACTION = 0.15
DEPTH_RANGE = (51, 959)
LAYOUT_FILE = "synthetic-layout.csv"
LAYOUT_COLUMNS = ("id", "section", "row", "col")
CHAOS_SIGMAS = (1.5, 2.0, 2.5)  # correlation lengths of the salt texture (one per section)
BLOCK = 128  # tiles rendered at a time: small blocks keep the float temporaries in the caches
# as hard for the edge matcher as the real tiles: middling contrast (edge standard deviations of 10 to 40 grey
# levels), pixel noise that blurs the seams of low-contrast tiles, and neighbours whose brightness and contrast differ
CONTRAST = (8.0, 40.0)  # grey levels per unit of the section's field
NOISE = (0.05, 0.3)  # pixel noise per tile, in units of the field
JITTER_CONTRAST = (0.8, 1.25)  # each tile's contrast relative to its section's
JITTER_BRIGHTNESS = 15.0  # each tile's brightness offset at most, grey levels
WRITE_BLOCK = 2048  # tiles rendered, then written as PNGs by a thread pool


@dataclass
class Synthetic:
    ids: np.ndarray
    images: np.ndarray  # (N, 101, 101) uint8
    masks: np.ndarray  # (N, 101, 101) bool
    depths: np.ndarray  # (N,) int
    flat: np.ndarray  # (N,) bool
    section: np.ndarray  # (N,) int: the true layout
    row: np.ndarray  # (N,) int
    col: np.ndarray  # (N,) int


def make_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct ids of 10 lower-case hex characters."""
    values = np.unique(rng.integers(0, 16 ** 10, size=int(n * 1.1) + 16, dtype=np.int64))
    values = rng.permutation(values)[:n]
    if values.size < n:  # astronomically unlikely
        return make_ids(rng, n)
    return np.char.mod("%010x", values).astype(str)


# -- which cells of which sections are kept --------------------------------------------------------------------------
@dataclass
class Cells:
    """The kept tiles: their section, row and column, and the sections' sizes in tiles."""

    section: np.ndarray  # (N,) int
    row: np.ndarray
    col: np.ndarray
    width: np.ndarray  # (S,) tiles
    height: np.ndarray  # (S,)
    blank_row: np.ndarray  # (S,) bool: the section's last row is blank

    @property
    def blank(self) -> np.ndarray:
        """(N,) bool: the tiles of a blank last row."""
        return self.blank_row[self.section] & (self.row == self.height[self.section] - 1)


def _section_cells(rng: np.random.Generator, mosaic: bool, width: int, height: int) -> np.ndarray:
    """(row, col) of the kept cells of one section, in random order."""
    r, c = np.mgrid[:height, :width]
    if mosaic:
        keep = rng.random((height, width)) < rng.uniform(0.7, 0.97)
    else:  # one checkerboard colour, thinned: no two kept cells share an edge
        keep = ((r + c) % 2 == rng.integers(2)) & (rng.random((height, width)) < 0.6)
    cells = np.stack([r[keep], c[keep]], axis=1)
    return cells[rng.permutation(len(cells))]


def draw_cells(rng: np.random.Generator, n: int) -> Cells:
    """``n`` kept tiles: about MOSAIC_SHARE of them from mosaic sections, the rest isolated (loop per section)."""
    want = {True: int(round(MOSAIC_SHARE * n)), False: 0}
    want[False] = n - want[True]
    rows, widths, heights = [], [], []
    for mosaic in (True, False):
        got = 0
        while got < want[mosaic]:
            w, h = int(rng.integers(4, 13)), int(rng.integers(3, 11))
            cells = _section_cells(rng, mosaic, w, h)[: want[mosaic] - got]
            if len(cells) == 0:
                continue
            rows.append(np.column_stack([np.full(len(cells), len(widths)), cells]))
            widths.append(w)
            heights.append(h)
            got += len(cells)
    table = np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)
    table = table[rng.permutation(len(table))]
    s = len(widths)
    return Cells(table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2].astype(np.int64),
                 np.array(widths, np.int64), np.array(heights, np.int64), rng.random(s) < BLANK_ROW_FRACTION)


# -- smooth random fields on coarse grids ----------------------------------------------------------------------------
@dataclass
class Grids:
    """One coarse grid of a smooth unit-variance random field per section, sampled bilinearly at pixels."""

    values: np.ndarray  # all grids, flattened one after the other (float32)
    offset: np.ndarray  # (S,) start of each grid in ``values``
    nx: np.ndarray  # (S,) nodes per grid row
    ny: np.ndarray  # (S,)
    y0: np.ndarray  # (S,) pixel coordinate of node row 0
    x0: np.ndarray  # (S,)
    step: tuple[float, float]  # pixels between nodes (y, x)

    @classmethod
    def draw(cls, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, step: tuple[float, float],
             corr: np.ndarray) -> "Grids":
        """Grids covering pixel boxes ``lo`` .. ``hi`` ((S, 2) as (y, x)) with correlation lengths ``corr``
        ((S, 2) pixels, Gaussian)."""
        step_arr = np.asarray(step, np.float64)
        lo = np.asarray(lo, np.float64) - step_arr
        shape = (np.ceil((np.asarray(hi, np.float64) - lo) / step_arr).astype(np.int64) + 2)
        values, offset, at = [], [], 0
        for (gy, gx), (cy, cx) in zip(shape, np.asarray(corr, np.float64)):
            field = ndimage.gaussian_filter(rng.standard_normal((gy, gx)), (cy / step[0], cx / step[1]),
                                            mode="reflect")
            field = (field - field.mean()) / (field.std() + 1e-9)
            values.append(field.astype(np.float32).ravel())
            offset.append(at)
            at += field.size
        values = np.concatenate(values) if values else np.zeros(0, np.float32)
        return cls(values, np.array(offset, np.int64), shape[:, 1].copy(), shape[:, 0].copy(),
                   lo[:, 0], lo[:, 1], step)

    def sample(self, sec: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Bilinear samples at pixel coordinates ``y``, ``x`` of shape (B, ...) (for a few points per tile)."""
        s = sec.reshape((-1,) + (1,) * (np.ndim(y) - 1))
        gy = ((y - self.y0[s]) / self.step[0]).astype(np.float32)
        gx = ((x - self.x0[s]) / self.step[1]).astype(np.float32)
        iy = np.clip(np.floor(gy).astype(np.int64), 0, self.ny[s] - 2)
        ix = np.clip(np.floor(gx).astype(np.int64), 0, self.nx[s] - 2)
        fy = np.clip(gy - iy.astype(np.float32), 0, 1)
        fx = np.clip(gx - ix.astype(np.float32), 0, 1)
        nx = self.nx[s]
        base = self.offset[s] + iy * nx + ix
        v = self.values
        top = v[base] + fx * (v[base + 1] - v[base])
        bottom = v[base + nx] + fx * (v[base + nx + 1] - v[base + nx])
        return top + fy * (bottom - top)

    def sample_windows(self, sec: np.ndarray, y_first: np.ndarray, x_first: np.ndarray, n: int) -> np.ndarray:
        """The bilinear field over square windows (B, n, n) whose first pixel is (y_first, x_first): a patch of
        nodes per window, interpolated by two small matrix products."""
        nodes = int(np.ceil(n / min(self.step))) + 2
        ky = np.clip(np.floor((y_first - self.y0[sec]) / self.step[0]).astype(np.int64), 0, self.ny[sec] - nodes)
        kx = np.clip(np.floor((x_first - self.x0[sec]) / self.step[1]).astype(np.int64), 0, self.nx[sec] - nodes)
        k = np.arange(nodes)
        index = (self.offset[sec][:, None, None] + (ky[:, None] + k)[:, :, None] * self.nx[sec][:, None, None]
                 + (kx[:, None] + k)[:, None, :])
        wy = _hat_weights(y_first, self.y0[sec] + ky * self.step[0], self.step[0], nodes, n)
        wx = _hat_weights(x_first, self.x0[sec] + kx * self.step[1], self.step[1], nodes, n)
        return wy @ self.values[index] @ wx.transpose(0, 2, 1)


def _hat_weights(first: np.ndarray, node0: np.ndarray, step: float, nodes: int, n: int) -> np.ndarray:
    """(B, n, nodes) linear-interpolation weights of pixels ``first[b] + i`` on nodes ``node0[b] + k * step``."""
    pos = ((first - node0).astype(np.float32)[:, None] + np.arange(n, dtype=np.float32)) / np.float32(step)
    return np.maximum(0, 1 - np.abs(pos[:, :, None] - np.arange(nodes, dtype=np.float32)))


def _lattice(first: np.ndarray, step: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Global lattice nodes (multiples of ``step``) covering n pixels from ``first``: (B, L) coordinates and the
    (B, n, L) interpolation weights."""
    nodes = int(np.ceil(n / step)) + 2
    k0 = np.floor_divide(first.astype(np.int64), step)
    coords = ((k0[:, None] + np.arange(nodes)) * step).astype(np.float32)
    return coords, _hat_weights(first, coords[:, 0], step, nodes, n)


def _trace_windows(trace: np.ndarray, start: np.ndarray, n: int) -> np.ndarray:
    """``trace[start + i]`` for i <= n, as rows: (..., n + 1) copied from a sliding-window view."""
    view = np.lib.stride_tricks.sliding_window_view(trace, n + 1)
    return view[np.clip(start, 0, len(view) - 1)]


def _ricker(points: int, width: float) -> np.ndarray:
    t = np.arange(points) - (points - 1) / 2
    a = (t / width) ** 2
    return (1 - 2 * a) * np.exp(-a)


def _mix32(h: np.ndarray) -> np.ndarray:
    """An integer hash of uint32 values (lowbias32): neighbouring inputs give unrelated outputs."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def _hashed_noise(salt: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """White noise, uniform in [-0.5, 0.5), that is a function of (salt, y, x) only: the same pixel of a section
    gets the same value in every tile window that contains it."""
    key = ((y + 4096).astype(np.uint32) << np.uint32(13)) + (x + 4096).astype(np.uint32)
    h = _mix32(_mix32(key) ^ salt[:, None, None])
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24) - np.float32(0.5)


def _radius(sigma: float) -> int:
    return min(MARGIN, int(np.ceil(4 * sigma)))


def _gauss_kernel(sigma: float) -> np.ndarray:
    t = np.arange(-_radius(sigma), _radius(sigma) + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter within each window (radius at most MARGIN: the core never depends on the window's border)."""
    r = _radius(sigma)
    return ndimage.gaussian_filter(field, (0, sigma, sigma), radius=(0, r, r), mode="nearest")


# -- the sections' look ----------------------------------------------------------------------------------------------
@dataclass
class Sections:
    """Everything that defines the sections' content, drawn once; tiles are rendered from it in any order."""

    cells: Cells
    # sediment: horizon depth u(x, y) = y + fold(x) + tilt * x + undulation(x)
    fold_amp: np.ndarray
    fold_wavelength: np.ndarray
    fold_phase: np.ndarray
    tilt: np.ndarray
    undulation: Grids  # 1 node row: a lateral function of x
    undulation_amp: np.ndarray
    trace: np.ndarray  # reflectivity series of all sections, concatenated, indexed by u - trace_u0
    trace_offset: np.ndarray
    trace_length: np.ndarray
    trace_u0: np.ndarray
    modulation: Grids  # amplitude along the reflectors, in (u, x)
    modulation_amp: np.ndarray
    # salt
    dome: Grids
    dome_trend: np.ndarray  # per 1000 px of the section's depth
    dome_offset: np.ndarray
    threshold: float  # domes are salt where their field is above this
    shapes: pd.DataFrame  # walls and small bodies: section, kind, x0, x1, top, ... (pixels)
    chaos_salt: np.ndarray  # (S,) uint32
    chaos_sigma: np.ndarray  # (S,) index into CHAOS_SIGMAS
    chaos_amp: np.ndarray
    texture_amp: np.ndarray  # (S,) the same texture, faint, in the sediment
    rim_gain: np.ndarray
    # intensities and depths
    contrast: np.ndarray
    brightness: np.ndarray
    blank_value: np.ndarray
    # the sea floor, per section (depth NaN: none): depth + slope * x + swell * sin(2 pi x / swell_length + phase)
    sea_depth: np.ndarray
    sea_slope: np.ndarray
    sea_swell: np.ndarray
    sea_swell_length: np.ndarray
    sea_phase: np.ndarray
    sea_gain: np.ndarray
    z_top: np.ndarray
    z_step: np.ndarray
    # per tile
    noise: np.ndarray  # (N,) pixel noise, in units of the sediment's amplitude
    jitter_contrast: np.ndarray  # (N,)
    jitter_brightness: np.ndarray  # (N,)

    @property
    def depths(self) -> np.ndarray:
        c = self.cells
        return np.round(self.z_top[c.section] + c.row * self.z_step[c.section]).astype(np.int64)

    @property
    def flat(self) -> np.ndarray:
        """(N,) bool: the tiles of a blank row, and those wholly in the water above the sea floor."""
        return self.cells.blank | (self._water_rows() >= SIZE).all(axis=1)

    @property
    def partly_flat(self) -> np.ndarray:
        """(N,) bool: the tiles that the sea floor crosses: still water over their top, sediment below."""
        return (self._water_rows() > 0).any(axis=1) & ~self.flat

    def _water_rows(self) -> np.ndarray:
        """(N, SIZE): how many of each tile's rows lie in the water above the sea floor, per column (0 without one)."""
        c = self.cells
        x = (c.col * SIZE)[:, None] + np.arange(SIZE)[None, :]
        floor = np.nan_to_num(_sea_floor(self, c.section, x.astype(np.float32)), nan=-np.inf)
        return np.clip(np.ceil(floor - (c.row * SIZE)[:, None]), 0, SIZE)


def _draw_shapes(rng: np.random.Generator, width_px: np.ndarray, height_px: np.ndarray) -> pd.DataFrame:
    """Salt walls (vertical sides from a curved top to the section's bottom) and small elliptic bodies."""
    s = len(width_px)
    n_walls = np.minimum(rng.poisson(0.9, s), 3)
    ws = np.repeat(np.arange(s), n_walls)
    wall_w = rng.uniform(25, 350, ws.size)
    x0 = rng.uniform(-0.1, 1.0, ws.size) * width_px[ws]
    walls = pd.DataFrame({"section": ws, "kind": 0, "x0": x0, "x1": x0 + wall_w,
                          "top": rng.uniform(0.0, 0.7, ws.size) * height_px[ws],
                          "curve": rng.uniform(0, 60, ws.size), "bottom": height_px[ws] + MARGIN})
    area = width_px * height_px / SIZE ** 2
    n_bodies = rng.poisson(0.12 * area)
    bs = np.repeat(np.arange(s), n_bodies)
    rx, ry = rng.uniform(2, 9, bs.size), rng.uniform(2, 7, bs.size)
    cx, cy = rng.uniform(0, 1, bs.size) * width_px[bs], rng.uniform(0, 1, bs.size) * height_px[bs]
    bodies = pd.DataFrame({"section": bs, "kind": 1, "x0": cx - rx, "x1": cx + rx, "top": cy - ry,
                           "curve": 0.0, "bottom": cy + ry})
    return pd.concat([walls, bodies], ignore_index=True)


def draw_sections(rng: np.random.Generator, n: int) -> Sections:
    """The layout of ``n`` tiles and every random parameter of their sections (cheap: coarse grids only)."""
    cells = draw_cells(rng, n)
    s = len(cells.width)
    wpx, hpx = cells.width * SIZE, cells.height * SIZE
    box_lo = np.full((s, 2), -MARGIN, np.float64)
    box_hi = np.stack([hpx, wpx], axis=1) + MARGIN

    fold_amp = rng.uniform(1.0, 8.0, s)
    fold_wavelength = rng.uniform(60, 250, s)
    fold_phase = rng.uniform(0, 2 * np.pi, s)
    tilt = rng.choice([-1, 1], s) * rng.uniform(0.02, 0.25, s)
    undulation_amp = rng.uniform(2.0, 8.0, s)
    undulation = Grids.draw(rng, np.stack([np.zeros(s), box_lo[:, 1]], 1), np.stack([np.ones(s), box_hi[:, 1]], 1),
                            (1.0, 8.0), np.stack([np.full(s, 0.1), rng.uniform(40, 90, s)], 1))

    # the horizons' depth range per section, for the reflectivity series and the modulation grid
    reach = np.abs(tilt) * (wpx + MARGIN) + fold_amp + 3.5 * undulation_amp + 4
    u_lo = -MARGIN - reach
    u_hi = hpx + MARGIN + reach
    trace_length = np.ceil(u_hi - u_lo).astype(np.int64) + 2
    trace_offset = np.concatenate([[0], np.cumsum(trace_length)[:-1]])
    traces = []
    for length in trace_length:  # loop per section
        spikes = rng.standard_normal(length) * (rng.random(length) < 0.25) + 0.3 * rng.standard_normal(length)
        t = ndimage.convolve1d(spikes, _ricker(31, rng.uniform(3.0, 5.0)), mode="reflect")
        traces.append(((t - t.mean()) / (t.std() + 1e-9)).astype(np.float32))
    modulation = Grids.draw(rng, np.stack([u_lo, box_lo[:, 1]], 1), np.stack([u_hi, box_hi[:, 1]], 1), (4.0, 10.0),
                            np.stack([np.full(s, 8.0), rng.uniform(25, 50, s)], 1))

    dome = Grids.draw(rng, box_lo, box_hi, (6.0, 6.0), np.repeat(rng.uniform(30, 90, s)[:, None], 2, axis=1))
    z_step = rng.uniform(50, 90, s)
    z_top = DEPTH_RANGE[0] + rng.random(s) * (DEPTH_RANGE[1] - DEPTH_RANGE[0] - (cells.height - 1) * z_step)

    m = len(cells.section)
    sections = Sections(
        cells=cells, fold_amp=fold_amp, fold_wavelength=fold_wavelength, fold_phase=fold_phase, tilt=tilt,
        undulation=undulation, undulation_amp=undulation_amp,
        trace=np.concatenate(traces) if traces else np.zeros(0, np.float32), trace_offset=trace_offset,
        trace_length=trace_length, trace_u0=u_lo, modulation=modulation, modulation_amp=rng.uniform(0.3, 0.6, s),
        dome=dome, dome_trend=rng.uniform(0.5, 3.0, s), dome_offset=rng.normal(0, 0.6, s), threshold=0.0,
        shapes=_draw_shapes(rng, wpx, hpx), chaos_salt=rng.integers(0, 2 ** 32, s, dtype=np.uint32),
        chaos_sigma=rng.integers(0, len(CHAOS_SIGMAS), s), chaos_amp=rng.uniform(0.45, 0.75, s).astype(np.float32),
        texture_amp=rng.uniform(0.2, 0.35, s).astype(np.float32),
        rim_gain=rng.uniform(0.8, 2.0, s).astype(np.float32), contrast=rng.uniform(*CONTRAST, s),
        brightness=rng.uniform(95, 150, s), blank_value=rng.integers(0, 256, s), z_top=z_top, z_step=z_step,
        **_draw_sea(rng.spawn(1)[0], s),
        noise=rng.uniform(*NOISE, m).astype(np.float32),
        jitter_contrast=rng.uniform(*JITTER_CONTRAST, m),
        jitter_brightness=rng.uniform(-JITTER_BRIGHTNESS, JITTER_BRIGHTNESS, m))
    sections.threshold = _empty_threshold(sections)
    return sections


def _draw_sea(rng: np.random.Generator, s: int) -> dict[str, np.ndarray]:
    """The sea floor of each of ``s`` sections (SEAFLOOR_FRACTION of them; depth NaN for the others)."""
    depth = rng.uniform(*SEAFLOOR_DEPTH, s)
    depth[rng.random(s) >= SEAFLOOR_FRACTION] = np.nan
    return {"sea_depth": depth, "sea_slope": rng.uniform(-SEAFLOOR_SLOPE, SEAFLOOR_SLOPE, s),
            "sea_swell": rng.uniform(0.0, 6.0, s), "sea_swell_length": rng.uniform(200.0, 600.0, s),
            "sea_phase": rng.uniform(0, 2 * np.pi, s), "sea_gain": rng.uniform(*SEAFLOOR_GAIN, s)}


def _sea_floor(sections: Sections, sec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The sea floor's depth (pixels from the section's top) at columns ``x`` (B, n) of sections ``sec`` (B,);
    NaN in sections without one."""
    S = sections
    p = lambda a: np.asarray(a)[sec].astype(np.float32)[:, None]  # noqa: E731
    return (p(S.sea_depth) + p(S.sea_slope) * x
            + p(S.sea_swell) * np.sin(2 * np.pi * x / p(S.sea_swell_length) + p(S.sea_phase)))


def _window_floor(sections: Sections, sec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The sea floor over windows whose columns are ``x`` (B, 1, n): (B, 1, n), NaN without one."""
    return _sea_floor(sections, sec, x[:, 0, :])[:, None, :]


def _salt_may(floor: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Where salt may be over windows (rows ``y``, the :func:`_window_floor` ``floor``): everywhere without a sea
    floor, else from SALT_BELOW_SEAFLOOR below it."""
    with np.errstate(invalid="ignore"):
        return ~(y < floor + SALT_BELOW_SEAFLOOR)


def _window_coords(sections: Sections, tiles: np.ndarray, margin: int = MARGIN):
    """Section (B,) and global pixel coordinates y (B, n, 1), x (B, 1, n) of the tiles plus ``margin`` pixels."""
    c = sections.cells
    t = np.arange(SIZE + 2 * margin, dtype=np.float32) - margin
    y = (c.row[tiles] * SIZE).astype(np.float32)[:, None, None] + t[None, :, None]
    x = (c.col[tiles] * SIZE).astype(np.float32)[:, None, None] + t[None, None, :]
    return c.section[tiles], y, x


def _per_tile(values: np.ndarray, sec: np.ndarray, ndim: int = 3) -> np.ndarray:
    """A per-section parameter for each tile, float32, shaped to broadcast against (B, ...) arrays."""
    return np.asarray(values)[sec].astype(np.float32).reshape((-1,) + (1,) * (ndim - 1))


def _dome_field(sections: Sections, sec: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The domes' field over the windows; salt where it exceeds ``sections.threshold``."""
    S = sections
    trend = _per_tile(S.dome_trend, sec) * (y - _per_tile(S.cells.height * SIZE / 2, sec)) / 1000
    depth = (_per_tile(S.z_top, sec) + y / SIZE * _per_tile(S.z_step, sec) - 505) / 454
    field = S.dome.sample_windows(sec, y[:, 0, 0], x[:, 0, 0], y.shape[1])
    return field + trend + 0.8 * depth + _per_tile(S.dome_offset, sec)


def _horizon_shift(sections: Sections, sec: np.ndarray, x: np.ndarray) -> np.ndarray:
    """How far the horizons are pushed down at columns ``x`` (B, n): fold + tilt + undulation."""
    S = sections
    p = lambda a: _per_tile(a, sec, 2)  # noqa: E731
    return (p(S.fold_amp) * np.sin(2 * np.pi * x / p(S.fold_wavelength) + p(S.fold_phase)) + p(S.tilt) * x
            + p(S.undulation_amp) * S.undulation.sample(sec, np.zeros_like(x), x))


def _sediment(sections: Sections, sec: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reflectors along the horizons u = y + shift(x), their amplitude modulated along u and x: (B, n, n)."""
    S = sections
    n = y.shape[1]
    y_first, x_first = y[:, 0, 0], x[:, 0, 0]
    pos = y_first[:, None] + _horizon_shift(S, sec, x[:, 0, :]) - _per_tile(S.trace_u0, sec, 2)
    base = np.clip(np.floor(pos).astype(np.int64), 0, (S.trace_length[sec] - n - 2)[:, None])
    w = (pos - base).astype(np.float32)[..., None]
    rows = _trace_windows(S.trace, S.trace_offset[sec][:, None] + base, n)  # (B, column, row)
    trace = (rows[..., :-1] + w * (rows[..., 1:] - rows[..., :-1])).transpose(0, 2, 1)
    ly, wy = _lattice(y_first, 3, n)  # the modulation is smooth: sample it on a lattice and interpolate
    lx, wx = _lattice(x_first, 3, n)
    ul = ly[:, :, None] + _horizon_shift(S, sec, lx)[:, None, :]
    ml = S.modulation.sample(sec, ul, np.broadcast_to(lx[:, None, :], ul.shape))
    modulation = wy @ ml @ wx.transpose(0, 2, 1)
    return trace * np.maximum(0.1, 1 + _per_tile(S.modulation_amp, sec) * modulation)


def _shape_masks(sections: Sections, tiles: np.ndarray, sec, y, x) -> np.ndarray:
    """Walls and small bodies over the tiles' windows: (B, W, W) bool, one pass per rank of shape in a tile."""
    n = y.shape[1]
    out = np.zeros((len(tiles), n, n), bool)
    shapes = sections.shapes
    if shapes.empty or not len(tiles):
        return out
    win = pd.DataFrame({"tile": np.arange(len(tiles)), "section": sec,
                        "wx0": x[:, 0, 0], "wy0": y[:, 0, 0]})
    pairs = win.merge(shapes, on="section")
    hit = ((pairs["x1"] >= pairs["wx0"]) & (pairs["x0"] < pairs["wx0"] + n)
           & (pairs["bottom"] >= pairs["wy0"]) & (pairs["top"] < pairs["wy0"] + n))
    pairs = pairs[hit.to_numpy()].reset_index(drop=True)
    if pairs.empty:
        return out
    rank = pairs.groupby("tile").cumcount().to_numpy()
    for k in range(int(rank.max()) + 1):  # a handful of passes: shapes touching one window
        p = pairs[rank == k]
        b = p["tile"].to_numpy()
        yy, xx = y[b], x[b]
        col = lambda name, p=p: p[name].to_numpy(np.float32)[:, None, None]  # noqa: E731
        x0, x1, top, bottom, curve = col("x0"), col("x1"), col("top"), col("bottom"), col("curve")
        half = (x1 - x0) / 2
        u = (xx - (x0 + half)) / half
        wall = (xx >= x0) & (xx < x1) & (yy >= top + curve * u * u) & (yy < bottom)
        body = ((u * u) + ((yy - (top + bottom) / 2) / ((bottom - top) / 2)) ** 2) < 1
        kind = p["kind"].to_numpy()[:, None, None]
        out[b] |= np.where(kind == 0, wall, body)
    return out


def _empty_threshold(sections: Sections) -> float:
    """The dome threshold that leaves EMPTY_FRACTION of all tiles without salt (walls, bodies, flat tiles count)."""
    n = len(sections.cells.section)
    peak = np.full(n, -np.inf, np.float32)
    forced = np.zeros(n, bool)
    for first in range(0, n, BLOCK):
        tiles = np.arange(first, min(n, first + BLOCK))
        sec, y, x = _window_coords(sections, tiles, margin=0)
        salt_may = _salt_may(_window_floor(sections, sec, x), y)
        peak[tiles] = np.where(salt_may, _dome_field(sections, sec, y, x), -np.inf).max(axis=(1, 2))
        forced[tiles] = (_shape_masks(sections, tiles, sec, y, x) & salt_may).any(axis=(1, 2))
    flat = sections.flat
    free = np.sort(peak[~forced & ~flat])
    need = int(round(EMPTY_FRACTION * n)) - int(flat.sum())  # flat tiles are empty anyway
    if need <= 0:
        return float(free[0]) - 1.0 if free.size else 0.0
    if need >= free.size:
        return float("inf")
    return float((free[need - 1] + free[need]) / 2)  # the ``need`` lowest peaks stay below it: empty


def render(sections: Sections, tiles: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8) and masks (bool) of some tiles, (B, 101, 101) each; ``rng`` draws only the pixel noise."""
    S = sections
    tiles = np.asarray(tiles, np.int64)
    sec, y, x = _window_coords(S, tiles)
    core = slice(MARGIN, MARGIN + SIZE)
    window_mask = (_dome_field(S, sec, y, x) > S.threshold) | _shape_masks(S, tiles, sec, y, x)
    floor = _window_floor(S, sec, x)  # (B, 1, W), NaN without a sea floor
    window_mask &= _salt_may(floor, y)
    # texture: one continuous filtered noise field, chaotic inside salt and faint in the sediment
    noise = _hashed_noise(S.chaos_salt[sec], y.astype(np.int64), x.astype(np.int64))
    texture = np.zeros((len(tiles), SIZE, SIZE), np.float32)
    for k, sigma in enumerate(CHAOS_SIGMAS):
        pick = np.flatnonzero(S.chaos_sigma[sec] == k)
        if pick.size:
            scale = np.float32(1.0 / (np.sqrt(1 / 12) * (_gauss_kernel(sigma) ** 2).sum()))  # unit variance
            texture[pick] = scale * _smooth(noise[pick], sigma)[:, core, core]
    img = _sediment(S, sec, y[:, core], x[:, :, core]) + _per_tile(S.texture_amp, sec) * texture
    salty = np.flatnonzero(window_mask.any(axis=(1, 2)))  # salt texture and rim only where there is salt
    if salty.size:
        s = sec[salty]
        soft = _smooth(window_mask[salty].astype(np.float32), 1.0)[:, MARGIN - 1:MARGIN + SIZE + 1,
                                                                     MARGIN - 1:MARGIN + SIZE + 1]
        gy, gx = np.gradient(soft, axis=(1, 2))
        rim = 4.0 * np.hypot(gy[:, 1:-1, 1:-1], gx[:, 1:-1, 1:-1])
        soft = soft[:, 1:-1, 1:-1]
        img[salty] += soft * (_per_tile(S.chaos_amp, s) * texture[salty] - img[salty]) + _per_tile(S.rim_gain, s) * rim
    img += S.noise[tiles][:, None, None] * rng.standard_normal(img.shape, dtype=np.float32)
    img = _sea(img, y[:, core] - floor[:, :, core], _per_tile(S.sea_gain, sec))
    img *= _per_tile(S.contrast, sec) * S.jitter_contrast[tiles][:, None, None].astype(np.float32)
    img += _per_tile(S.brightness, sec) + S.jitter_brightness[tiles][:, None, None].astype(np.float32)
    images = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    mask = np.ascontiguousarray(window_mask[:, core, core])
    flat = S.cells.blank[tiles]  # a blank row (the tiles wholly in the water are flat already)
    images[flat] = S.blank_value[sec[flat]].astype(np.uint8)[:, None, None]
    mask[flat] = False
    return images, mask


def _sea(img: np.ndarray, below: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``img`` with still water where ``below`` (pixels below the sea floor, NaN: no sea) is negative: zero
    amplitude and no noise, so flat after any contrast; on the floor a strong reflector (a Ricker pulse)."""
    with np.errstate(invalid="ignore"):
        water = below < 0
        t = np.nan_to_num(below, nan=1e3) / np.float32(3.0)
        pulse = gain * (1 - 2 * t * t) * np.exp(-t * t)
    return np.where(water, np.float32(0), img + pulse.astype(np.float32))


def render_all(sections: Sections, tiles: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render` of any number of tiles, BLOCK at a time."""
    tiles = np.asarray(tiles, np.int64)
    images = np.zeros((len(tiles), SIZE, SIZE), np.uint8)
    masks = np.zeros((len(tiles), SIZE, SIZE), bool)
    for first in range(0, len(tiles), BLOCK):
        part = slice(first, first + BLOCK)
        images[part], masks[part] = render(sections, tiles[part], rng)
    return images, masks


def generate(n: int, rng: np.random.Generator, ids: np.ndarray | None = None) -> Synthetic:
    """``n`` synthetic tiles of a few sections, all in memory (for tests; write_dataset renders in blocks)."""
    sections = draw_sections(rng, n)
    ids = make_ids(rng, n) if ids is None else np.asarray(ids)
    images, masks = render_all(sections, np.arange(n), rng)
    c = sections.cells
    return Synthetic(ids, images, masks, sections.depths, sections.flat, c.section, c.row, c.col)


# -- files -----------------------------------------------------------------------------------------------------------
def _write_pngs(folder: Path, ids, arrays, transform) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def work(i: int) -> None:
        if not cv2.imwrite(str(folder / f"{ids[i]}.png"), transform(i, arrays[i])):
            raise OSError(f"could not write {folder / (ids[i] + '.png')}")

    with ThreadPoolExecutor(default_workers()) as pool:
        list(pool.map(work, range(len(ids))))


def read_layout(root: str | os.PathLike) -> pd.DataFrame:
    """The true layout of a synthetic set, ``DATA/synthetic-layout.csv``: id, section, row, col of every tile
    (train and test), as ints.

    It lies outside Kaggle's layout and exists for tests and benchmarks only (to measure how well the mosaics are
    rebuilt): no pipeline step may read it, since the real data has no such file.
    """
    path = Path(root) / LAYOUT_FILE
    df = read_csv_strings(path, LAYOUT_COLUMNS)
    for name in LAYOUT_COLUMNS[1:]:
        df[name] = df[name].astype(np.int64)
    return df


def write_dataset(out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Write a complete synthetic dataset in Kaggle's layout (plus the true layout); returns a small summary."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    sections = draw_sections(rng, total)
    ids = make_ids(rng, total)
    is_train = np.zeros(total, bool)
    is_train[rng.permutation(total)[:n_train]] = True
    order = np.concatenate([rng.permutation(np.flatnonzero(is_train)), rng.permutation(np.flatnonzero(~is_train))])
    l_mode = rng.random(total) < L_MODE_FRACTION
    mask16 = rng.random(total) < MASK16_FRACTION
    train_rles: list[str] = []
    empty = salt_pixels = 0

    def image_png(i, img):
        return img if l_mode[i] else np.repeat(img[..., None], 3, axis=2)

    def mask_png(i, m):
        return (m.astype(np.uint16) * 65535) if mask16[i] else (m.astype(np.uint8) * 255)

    for first in range(0, total, WRITE_BLOCK):
        tiles = order[first:first + WRITE_BLOCK]
        images, masks = render_all(sections, tiles, rng)
        tr = is_train[tiles]
        if tr.any():
            t = tiles[tr]
            _write_pngs(out / "train" / "images", ids[t], images[tr], lambda i, x, t=t: image_png(t[i], x))
            _write_pngs(out / "train" / "masks", ids[t], masks[tr], lambda i, x, t=t: mask_png(t[i], x))
            train_rles += rle.encode(masks[tr])
            empty += int((~masks[tr].any(axis=(1, 2))).sum())
            salt_pixels += int(masks[tr].sum())
        if (~tr).any():
            t = tiles[~tr]
            _write_pngs(out / "test" / "images", ids[t], images[~tr], lambda i, x, t=t: image_png(t[i], x))

    train_ids, test_ids = ids[order[:n_train]], ids[order[n_train:]]
    with atomic_open(out / "train.csv", "w", newline="") as fh:
        pd.DataFrame({"id": train_ids, "rle_mask": train_rles}).to_csv(fh, index=False)
    shuffled = rng.permutation(total)
    with atomic_open(out / "depths.csv", "w", newline="") as fh:
        pd.DataFrame({"id": ids[shuffled], "z": sections.depths[shuffled]}).to_csv(fh, index=False)
    with atomic_open(out / "sample_submission.csv", "w", newline="") as fh:
        pd.DataFrame({"id": test_ids, "rle_mask": "1 1"}).to_csv(fh, index=False)
    c = sections.cells
    with atomic_open(out / LAYOUT_FILE, "w", newline="") as fh:
        pd.DataFrame({"id": ids, "section": c.section, "row": c.row, "col": c.col}).to_csv(fh, index=False)
    for folder in (out / "train" / "images", out / "train" / "masks", out / "test" / "images"):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "train": n_train,
        "test": n_test,
        "empty_fraction": empty / n_train if n_train else float("nan"),
        "flat_images": int(sections.flat.sum()),
        "partly_flat_images": int(sections.partly_flat.sum()),
        "mean_coverage": salt_pixels / (n_train * SIZE * SIZE) if n_train else float("nan"),
        "sections": len(c.width),
    }


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m datasets.synthetic`` (``--seed`` from its declaration, tgs/options.py)."""
    from tgs.cliargs import ArgumentParser, add_declared, integer
    from tgs.options import SEED

    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="dataset folder to create (Kaggle's layout)")
    p.add_argument("--train", type=integer(1, 1_000_000), default=4000,
                   help="training images (default 4000, as in the competition)")
    p.add_argument("--test", type=integer(0, 1_000_000), default=18000,
                   help="test images (default 18000, as in the competition)")
    add_declared(p, "--seed", SEED, 0, "the same seed, the same dataset")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that already has files (an old dataset there is replaced)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    from tgs.io import check_output

    check_output(out, "--out")  # a new dataset, never inside another one's train/ or test/
    if args.train < 0 or args.test < 0:
        raise UserError("--train and --test must be >= 0")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"--out {out} is not empty; pass --force to write into it anyway")
    if args.force and out.is_dir():  # the old dataset goes first: its PNGs must not mix with the new CSVs
        import shutil

        from tgs.io import DATASET_ENTRIES

        for name in (*DATASET_ENTRIES, LAYOUT_FILE, ".cache"):
            old = out / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
    summary = write_dataset(out, args.train, args.test, args.seed)
    print(f"wrote {summary['train']} train and {summary['test']} test images from {summary['sections']} sections "
          f"to {out} (empty masks {summary['empty_fraction']:.1%}, mean coverage {summary['mean_coverage']:.1%}, "
          f"flat images {summary['flat_images']}, under the sea floor's water {summary['partly_flat_images']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
