"""How a 101x101 image enters a model and how the model's output leaves it: the one place that knows.

An :class:`InputSpec` is stored inside every checkpoint, so train.py, swa.py, test.py and every fold of an
ensemble prepare images and restore predictions the same way:

- ``pad``: reflect-pad 101 -> ``size`` (BORDER_REFLECT_101, i.e. the edge pixel is not repeated; ``replicate``
  and ``constant`` (zeros) are the other borders), and crop the centre back out;
- ``resize``: bilinear resize to ``size`` for images (nearest for masks), bilinear back to 101 for outputs;
- ``resize_pad`` (the 1st place's): resize 101 -> 202, reflect-pad to ``size`` (256), and back.

Each mode is a :class:`Codec` registered once in :data:`INPUT_MODES` (its help, default size, and whether the
tile's pixels stay unscaled in the model's input, which ``--loss-on-center`` needs); a new mode is one class here.

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
from tgs.registry import Registry

SOURCE_SIZE = TILE
BORDERS = {"reflect_101": "reflect", "replicate": "replicate", "constant": "constant"}
INPUT_MODES = Registry("input mode")


@dataclass(frozen=True)
class InputSpec:
    """How tiles of side ``source`` enter a model of input side ``size``: an :data:`INPUT_MODES` name, and the
    ``border`` of the padding modes."""

    mode: str = "pad"
    size: int = 128
    border: str = "reflect_101"
    source: int = SOURCE_SIZE

    def __post_init__(self):
        INPUT_MODES.lookup(self.mode)
        if self.border not in BORDERS:
            raise UserError(f"border {self.border!r} is not one of {', '.join(BORDERS)}")
        self.codec.check(self)

    @property
    def codec(self) -> "Codec":
        return INPUT_MODES.get(self.mode).obj()

    # -- description -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        known = {k: d[k] for k in ("mode", "size", "border", "source") if k in d}
        return cls(**known)

    # -- into the model --------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, 101, 101) uint8 or float in [0, 1] -> (N, C, size, size) float in [0, 1]."""
        x = _as_float(images)
        self._check_source(x)
        return self.codec.encode(self, x, mask=False)

    def encode_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """(N, 1, 101, 101) bool/uint8/float masks -> (N, 1, size, size) float 0/1."""
        x = masks.float() if masks.dtype != torch.float32 else masks
        x = (x > 0).float() if masks.dtype in (torch.bool, torch.uint8) else x
        self._check_source(x)
        return self.codec.encode(self, x, mask=True)

    # -- out of the model ------------------------------------------------------------------------------------
    def decode(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, size, size) logits or probabilities -> (N, C, 101, 101)."""
        if maps.shape[-2:] != (self.size, self.size):
            raise ValueError(f"expected model output of {self.size}x{self.size}, got {tuple(maps.shape[-2:])}")
        return self.codec.decode(self, maps)

    def centre(self) -> tuple[slice, slice]:
        """Rows/columns of the original image inside the model's input (modes that keep its pixels unscaled)."""
        return self.codec.centre(self)

    def _check_source(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2:] != (self.source, self.source):
            raise ValueError(f"expected (N, C, {self.source}, {self.source}) input, got {tuple(x.shape)}")


# -- the modes: one class each, registered once ------------------------------------------------------------------
class Codec:
    """An input mode: ``encode`` a (N, C, source, source) float tensor to the model's input, ``decode`` the model's
    maps back; ``check`` refuses a spec the mode cannot serve (one line); ``centre`` (only where the source's pixels
    sit unscaled in the input) the rows/columns that hold them."""

    def check(self, spec: InputSpec) -> None:
        pass

    def encode(self, spec: InputSpec, x: torch.Tensor, mask: bool) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, spec: InputSpec, maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def centre(self, spec: InputSpec) -> tuple[slice, slice]:
        raise UserError(f"input mode {spec.mode!r} does not keep the tile's pixels unscaled in the model's input")


def _pad(spec: InputSpec, x: torch.Tensor, side: int) -> torch.Tensor:
    """Pad ``x`` (side x side) to spec.size with spec.border, centred (the extra pixel, if odd, after)."""
    before = (spec.size - side) // 2
    after = spec.size - side - before
    return F.pad(x, (before, after, before, after), mode=BORDERS[spec.border])


def _check_pad(spec: InputSpec, side: int, how: str) -> None:
    if spec.size < side:
        raise UserError(f"cannot pad {how} to {spec.size}: use a size >= {side} or another input mode")
    if spec.border == "reflect_101" and spec.size - side >= 2 * side:
        raise UserError(f"reflect padding {how} to {spec.size} is too wide; use a smaller size")


def _resize(x: torch.Tensor, side: int, mask: bool) -> torch.Tensor:
    if mask:
        return F.interpolate(x, size=(side, side), mode="nearest-exact")
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


@INPUT_MODES.register("pad", help="reflect-pad 101 -> size (the recipe, 128), crop the centre back out",
                      default_size=128, keeps_pixels=True)
class Pad(Codec):
    def check(self, spec: InputSpec) -> None:
        _check_pad(spec, spec.source, str(spec.source))

    def encode(self, spec: InputSpec, x: torch.Tensor, mask: bool) -> torch.Tensor:
        return _pad(spec, x, spec.source)

    def decode(self, spec: InputSpec, maps: torch.Tensor) -> torch.Tensor:
        rows, cols = self.centre(spec)
        return maps[..., rows, cols]

    def centre(self, spec: InputSpec) -> tuple[slice, slice]:
        a = (spec.size - spec.source) // 2
        return slice(a, a + spec.source), slice(a, a + spec.source)


@INPUT_MODES.register("resize", help="bilinear resize 101 -> size (nearest for masks), bilinear back to 101",
                      default_size=128, keeps_pixels=False)
class Resize(Codec):
    def encode(self, spec: InputSpec, x: torch.Tensor, mask: bool) -> torch.Tensor:
        return _resize(x, spec.size, mask)

    def decode(self, spec: InputSpec, maps: torch.Tensor) -> torch.Tensor:
        return F.interpolate(maps, size=(spec.source, spec.source), mode="bilinear", align_corners=False)


@INPUT_MODES.register("resize_pad", help="the 1st place's: resize 101 -> 202 (x2), reflect-pad to size (256), "
                                         "crop and resize back", default_size=256, keeps_pixels=False)
class ResizePad(Codec):
    def check(self, spec: InputSpec) -> None:
        _check_pad(spec, 2 * spec.source, f"{spec.source} x2 = {2 * spec.source}")

    def encode(self, spec: InputSpec, x: torch.Tensor, mask: bool) -> torch.Tensor:
        return _pad(spec, _resize(x, 2 * spec.source, mask), 2 * spec.source)

    def decode(self, spec: InputSpec, maps: torch.Tensor) -> torch.Tensor:
        a = (spec.size - 2 * spec.source) // 2
        inner = maps[..., a:a + 2 * spec.source, a:a + 2 * spec.source]
        return F.interpolate(inner, size=(spec.source, spec.source), mode="bilinear", align_corners=False)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()
