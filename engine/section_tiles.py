"""A whole section as overlapping tiles and back: the amplitude clip, the windows, the blend.

- :class:`Clip`: seismic amplitudes (floats of any scale and sign) to the competition's 8-bit grey, a linear map
  of [lo, hi] to 0..255 with everything outside clipped; :func:`estimate_clip` takes lo and hi as percentiles of
  a bounded sample of amplitudes (so a large file is never read whole for it).
- :class:`Tiling`: windows of ``tile`` x ``tile`` pixels every ``tile - overlap`` pixels over a section
  reflect-padded at its borders (the section's edges are seen with context on both sides, like its inside);
  :meth:`Tiling.windows` cuts them (a strided view, copied once), :meth:`Tiling.blend` puts the windows'
  probabilities back with a smooth weight (a squared sine across each window, near 0 at its edges, 1 at its
  centre) and divides by the summed weights, so every pixel is a weighted mean of the windows covering it and no
  window border shows as a seam. Both run as whole-array operations (``torch.nn.functional.fold`` sums the
  weighted windows), never a Python loop per window.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from tgs import TILE

WEIGHTS = ("smooth", "box")


@dataclass(frozen=True)
class Clip:
    """Amplitudes in [lo, hi] map linearly to 0..255; outside they clip."""

    lo: float
    hi: float
    source: str = "given"

    def apply(self, amplitudes: np.ndarray) -> np.ndarray:
        """float amplitudes -> uint8 grey (rounded)."""
        scale = np.float32(255.0 / (self.hi - self.lo))
        out = (np.asarray(amplitudes, np.float32) - np.float32(self.lo)) * scale
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def describe(self) -> str:
        return f"clip: amplitudes {self.lo:.6g} .. {self.hi:.6g} -> grey 0 .. 255 ({self.source})"


def estimate_clip(sample: np.ndarray, percentiles: tuple[float, float]) -> Clip:
    """The clip at ``percentiles`` of the finite values of ``sample``; a constant sample gets a unit range around
    its value (a blank section becomes one grey, as the competition's flat tiles)."""
    values = np.asarray(sample, np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Clip(-1.0, 1.0, "no finite amplitude in the sample")
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    return Clip(lo, hi, f"percentiles {percentiles[0]:g} and {percentiles[1]:g} of {values.size} sampled amplitudes")


def _reflect(a: np.ndarray, before: tuple[int, int], after: tuple[int, int]) -> np.ndarray:
    """Reflect-pad a 2D array (the edge pixel is not repeated); any pad width, also beyond the array's size."""
    if min(a.shape) == 1:
        mode = "edge"  # a single row or column has nothing to reflect
    else:
        mode = "reflect"
    return np.pad(a, ((before[0], after[0]), (before[1], after[1])), mode=mode)


def _axis(length: int, tile: int, stride: int, before: int) -> tuple[int, int]:
    """(padded length, pad after) of one axis: at least one tile, and whole strides after the first window."""
    padded = max(tile, length + 2 * before)
    padded += (-(padded - tile)) % stride
    return padded, padded - length - before


@dataclass(frozen=True)
class Tiling:
    """The windows over a ``height`` x ``width`` section (see the module's docstring)."""

    height: int
    width: int
    tile: int = TILE
    overlap: int = TILE // 2
    weights: str = "smooth"

    def __post_init__(self):
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap {self.overlap} must be in 0 .. {self.tile - 1}")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights {self.weights!r} is not one of {WEIGHTS}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def before(self) -> int:
        """Reflected pixels before the section on each axis: half the overlap (a border pixel is as far inside
        its first window as the pixels where two windows meet)."""
        return self.overlap // 2

    @cached_property
    def padded(self) -> tuple[int, int]:
        return _axis(self.height, self.tile, self.stride, self.before)[0], \
            _axis(self.width, self.tile, self.stride, self.before)[0]

    @property
    def grid(self) -> tuple[int, int]:
        """Windows down and across."""
        return tuple((p - self.tile) // self.stride + 1 for p in self.padded)

    def __len__(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def small(self) -> bool:
        """The section is smaller than one tile on some axis (it is padded up to one)."""
        return self.height < self.tile or self.width < self.tile

    def origins(self) -> tuple[np.ndarray, np.ndarray]:
        """First row and first column of each window (in the section's coordinates, negative in the padding)."""
        rows, cols = self.grid
        return (np.arange(rows) * self.stride - self.before, np.arange(cols) * self.stride - self.before)

    def window_weight(self) -> np.ndarray:
        """(tile, tile) float32 blending weight of one window."""
        if self.weights == "box":
            return np.ones((self.tile, self.tile), np.float32)
        t = np.sin(np.pi * (np.arange(self.tile) + 0.5) / self.tile) ** 2
        return np.outer(t, t).astype(np.float32)

    def windows(self, section: np.ndarray) -> np.ndarray:
        """(N, tile, tile) windows of a (height, width) section, row by row, in the section's dtype."""
        if section.shape != (self.height, self.width):
            raise ValueError(f"section of shape {section.shape}, tiling of {(self.height, self.width)}")
        after = tuple(_axis(n, self.tile, self.stride, self.before)[1] for n in (self.height, self.width))
        padded = _reflect(section, (self.before, self.before), after)
        view = np.lib.stride_tricks.sliding_window_view(padded, (self.tile, self.tile))
        view = view[::self.stride, ::self.stride]
        return np.array(view).reshape(-1, self.tile, self.tile)  # a writable copy, even of a single window

    def blend(self, probs) -> np.ndarray:
        """(N, tile, tile) window probabilities (numpy or torch) -> (height, width) float32 weighted mean."""
        p = probs.float() if torch.is_tensor(probs) else torch.as_tensor(np.asarray(probs, np.float32))
        if p.shape != (len(self), self.tile, self.tile):
            raise ValueError(f"expected {(len(self), self.tile, self.tile)} window probabilities, got {tuple(p.shape)}")
        w = torch.from_numpy(self.window_weight())
        summed = self._fold((p * w).reshape(len(self), -1))
        out = summed / torch.from_numpy(self._norm)
        b = self.before
        return np.ascontiguousarray(out.numpy()[b:b + self.height, b:b + self.width])

    def _fold(self, columns: torch.Tensor) -> torch.Tensor:
        """Sum (N, tile * tile) windows into the padded section."""
        folded = F.fold(columns.T.unsqueeze(0), self.padded, self.tile, stride=self.stride)
        return folded[0, 0]

    @cached_property
    def _norm(self) -> np.ndarray:
        w = torch.from_numpy(self.window_weight()).reshape(1, -1).expand(len(self), -1)
        return self._fold(w.contiguous()).numpy()
