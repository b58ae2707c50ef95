"""Whole synthetic seismic sections with their true salt, as SEG-Y (2D and a small 3D volume) and PNG: test data
for section.py without real surveys.

    python -m datasets.synthetic_sections --out DIR --seed 0

The sections are those of :mod:`datasets.synthetic` (the generator that cuts the competition-like tiles), drawn
whole: every cell of a section is rendered (not only the kept ones), with one brightness, contrast and noise level
per section (the tiles' jitter would draw the cell grid into the section), and no blank row. The tiles of the
training sets are cut from the same kind of sections, so a model trained on them meets the same geology here.

- :func:`draw` returns (grey uint8 (rows, cols), salt bool (rows, cols)) sections, depth down the rows;
- :func:`volume` stacks neighbouring windows of one section into a small 3D volume (inline ``i`` is the section's
  columns ``i * step ..``), so the salt is continuous from inline to inline and along the crosslines;
- :func:`amplitudes` maps grey to seismic-like floats in [-1, 1] (``--clip -1 1`` maps them back exactly);
- :func:`write` writes ``section.sgy``, ``section.png``, ``section-truth.npy``, ``volume.sgy`` (inline-sorted) and
  ``volume-truth.npy`` ((inlines, crosslines, samples)).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from datasets import segy, synthetic
from tgs import TILE
from tgs.errors import cli


def _whole(sections: synthetic.Sections, s: int, rows: int, cols: int) -> synthetic.Sections:
    """``sections`` redrawn to render every cell of section ``s`` (its first ``rows`` x ``cols`` cells), each tile
    with the per-tile values (noise, jitter) of one of the section's own tiles."""
    c = sections.cells
    m, n_sections = len(c.section), len(c.width)
    if m == n_sections:
        raise ValueError("as many tiles as sections: per-tile values cannot be told from per-section ones")
    rr, cc = np.mgrid[:rows, :cols]
    k = rr.size
    cells = synthetic.Cells(np.full(k, s, np.int64), rr.ravel().astype(np.int64), cc.ravel().astype(np.int64),
                            c.width, c.height, np.zeros(n_sections, bool))
    first = int(np.flatnonzero(c.section == s)[0])
    per_tile = {f.name: getattr(sections, f.name)[np.full(k, first)] for f in dataclasses.fields(sections)
                if f.name != "cells" and isinstance(getattr(sections, f.name), np.ndarray)
                and getattr(sections, f.name).shape[:1] == (m,)}
    return dataclasses.replace(sections, cells=cells, **per_tile)


def draw(seed: int, count: int = 1, rows: int | None = None, cols: int | None = None,
         tiles: int = 300) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` whole sections (the largest of a generator run of ``tiles`` tiles), each cut to at most
    ``rows`` x ``cols`` cells of 101 pixels: [(grey (H, W) uint8, salt (H, W) bool), ...]."""
    rng = np.random.default_rng(seed)
    sections = synthetic.draw_sections(rng, tiles)
    c = sections.cells
    order = np.argsort(-(c.width * c.height), kind="stable")[:count]
    out = []
    for s in order:  # loop per section
        h, w = int(min(rows or c.height[s], c.height[s])), int(min(cols or c.width[s], c.width[s]))
        images, masks = synthetic.render_all(_whole(sections, int(s), h, w), np.arange(h * w), rng)
        grey = images.reshape(h, w, TILE, TILE).transpose(0, 2, 1, 3).reshape(h * TILE, w * TILE)
        salt = masks.reshape(h, w, TILE, TILE).transpose(0, 2, 1, 3).reshape(h * TILE, w * TILE)
        out.append((np.ascontiguousarray(grey), np.ascontiguousarray(salt)))
    return out


def amplitudes(grey: np.ndarray) -> np.ndarray:
    """Grey 0..255 -> float32 amplitudes in [-1, 1] (zero-mean-like, as seismic)."""
    return (grey.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)


def volume(section: np.ndarray, inlines: int, crosslines: int, step: int = 1) -> np.ndarray:
    """(inlines, crosslines, rows) from a (rows, cols) section: inline ``i`` is columns ``i * step`` onwards."""
    rows, cols = section.shape
    if crosslines + (inlines - 1) * step > cols:
        raise ValueError(f"a section of {cols} columns is too narrow for {inlines} inlines of {crosslines} "
                         f"crosslines every {step}")
    start = np.arange(inlines)[:, None] * step + np.arange(crosslines)[None, :]
    return np.ascontiguousarray(section.T[start])


def write(out: str | os.PathLike, seed: int = 0, rows: int = 4, cols: int = 8, inlines: int = 12,
          crosslines: int = 202, fmt: int = segy.IEEE_FLOAT, endian: str = "big") -> dict:
    """The 2D section and the 3D volume of one synthetic section, with their truth (see the module docstring)."""
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grey, salt = draw(seed, 1, rows, cols)[0]
    segy.write_array(out / "section.sgy", amplitudes(grey).T, fmt, endian)
    if not cv2.imwrite(str(out / "section.png"), grey):
        raise OSError(f"could not write {out / 'section.png'}")
    np.save(out / "section-truth.npy", salt)
    crosslines = min(crosslines, grey.shape[1] - inlines + 1)
    segy.write_array(out / "volume.sgy", volume(amplitudes(grey), inlines, crosslines), fmt, endian)
    np.save(out / "volume-truth.npy", volume(salt, inlines, crosslines))
    return {"section": grey.shape, "salt": float(salt.mean()), "volume": (inlines, crosslines, grey.shape[0])}


def build_parser():
    """The parser of ``python -m datasets.synthetic_sections`` (``--seed`` from its declaration, tgs/options.py)."""
    from tgs.cliargs import ArgumentParser, add_declared, integer
    from tgs.options import SEED

    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write into")
    add_declared(p, "--seed", SEED, 0, "the same seed, the same section")
    p.add_argument("--rows", type=integer(1, 10), default=4, help="tile rows of the section (101 px each)")
    p.add_argument("--cols", type=integer(1, 12), default=8, help="tile columns of the section")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    summary = write(args.out, args.seed, args.rows, args.cols)
    print(f"wrote a section of {summary['section'][0]} x {summary['section'][1]} samples ({summary['salt']:.1%} salt) "
          f"and a volume of {' x '.join(map(str, summary['volume']))} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
