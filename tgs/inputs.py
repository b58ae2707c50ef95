"""How a 101x101 image enters a model and how the model's output leaves it: the one place that knows.

An :class:`InputSpec` is stored inside every checkpoint, so train.py, swa.py, test.py and every fold of an
ensemble prepare images and restore predictions the same way:

- ``pad``: reflect-pad 101 -> ``size`` (BORDER_REFLECT_101, i.e. the edge pixel is not repeated; ``replicate``
  and ``constant`` (zeros) are the other borders), and crop the centre back out;
- ``resize``: bilinear resize to ``size`` for images (nearest for masks), bilinear back to 101 for outputs.

Everything here works on torch tensors of shape (N, C, H, W) on any device, so the same code runs on the GPU
inside the prediction loop and on the CPU in the data pipeline. Images enter the model as float in [0, 1];
normalisation is the model's own business (it keeps its encoder's mean/std as buffers).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from tgs import TILE
from tgs.errors import UserError

SOURCE_SIZE = TILE
MODES = ("pad", "resize")
BORDERS = {"reflect_101": "reflect", "replicate": "replicate", "constant": "constant"}


@dataclass(frozen=True)
class InputSpec:
    mode: str = "pad"
    size: int = 128
    border: str = "reflect_101"
    source: int = SOURCE_SIZE

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"input mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.border not in BORDERS:
            raise UserError(f"border {self.border!r} is not one of {', '.join(BORDERS)}")
        if self.mode == "pad" and self.size < self.source:
            raise UserError(f"cannot pad {self.source} to {self.size}: use a size >= {self.source} or --resize")
        if self.mode == "pad" and self.border == "reflect_101" and self.size - self.source >= 2 * self.source:
            raise UserError(f"reflect padding {self.source} -> {self.size} is too wide; use a smaller size")

    # -- description -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        known = {k: d[k] for k in ("mode", "size", "border", "source") if k in d}
        return cls(**known)

    @property
    def pad_before(self) -> int:
        return (self.size - self.source) // 2

    @property
    def pad_after(self) -> int:
        return self.size - self.source - self.pad_before

    def centre(self) -> tuple[slice, slice]:
        """Rows/columns of the original image inside the model's input (pad mode only)."""
        a = self.pad_before
        return slice(a, a + self.source), slice(a, a + self.source)

    # -- into the model --------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, 101, 101) uint8 or float in [0, 1] -> (N, C, size, size) float in [0, 1]."""
        x = _as_float(images)
        self._check_source(x)
        if self.mode == "pad":
            return self._pad(x)
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)

    def encode_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, 1, 101, 101) bool/uint8/float masks -> (N, 1, size, size) float 0/1."""
        x = masks.float() if masks.dtype != torch.float32 else masks
        x = (x > 0).float() if masks.dtype in (torch.bool, torch.uint8) else x
        self._check_source(x)
        if self.mode == "pad":
            return self._pad(x)
        return F.interpolate(x, size=(self.size, self.size), mode="nearest-exact")

    # -- out of the model ------------------------------------------------------------------------------------
    def decode(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, size, size) logits or probabilities -> (N, C, 101, 101)."""
        if maps.shape[-2:] != (self.size, self.size):
            raise ValueError(f"expected model output of {self.size}x{self.size}, got {tuple(maps.shape[-2:])}")
        if self.mode == "pad":
            rows, cols = self.centre()
            return maps[..., rows, cols]
        return F.interpolate(maps, size=(self.source, self.source), mode="bilinear", align_corners=False)

    # -- helpers ---------------------------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pad_before, self.pad_after
        return F.pad(x, (a, b, a, b), mode=BORDERS[self.border])

    def _check_source(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2:] != (self.source, self.source):
            raise ValueError(f"expected (N, C, {self.source}, {self.source}) input, got {tuple(x.shape)}")


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
