"""Model configuration: a plain dataclass that round-trips through a dict of builtins (stored in checkpoints)."""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from tgs.errors import UserError

from .blocks import SKIP_MODES


@dataclass
class ModelConfig:
    """Everything needed to build (and rebuild) a model. Defaults are the 9th-place recipe.

    encoder: a timm model name supporting ``features_only`` (``resnet34``, ``seresnext50_32x4d``, ``vgg16_bn``,
        ``efficientnet_b0`` ...), a recipe alias (``senet154`` -> timm ``legacy_senet154``, see
        ``models.encoders.ENCODERS``) or a from-scratch encoder (``unet``, ``unet_nopool``).
    pretrained: ``None`` (random init), ``"imagenet"`` (timm's weights, needs its hub or cache) or the path of a
        local state dict (timm or Cadene ``pretrainedmodels`` keys). Never stored in checkpoints (weights are).
    input_upsample: 1, or 2 to up-sample the input x2 (bilinear) before the encoder (the recipe: 128 -> 256).
        Outputs are always at the input resolution.
    center_channels: width of the context conv (3x3 conv + BN on the deepest features), its OC block and the
        centre block.
    decoder_channels: width of each decoder block, one int for all or a list, deepest block first.
    oc_center / oc_decoder: object-context block after the context conv / inside each decoder block.
    scse: scSE attention in each decoder block.
    skip: how a decoder block fuses the encoder features of its scale: concat | add | max | none.
    dropout: dropout of the heads (image branch, hypercolumn). oc_dropout: Dropout2d of the OC fusion.
    image_channels: width of the image-level feature (fused into the final pixel logit).
    fuse_channels: width of the hypercolumn fusion conv before the final logit.
    encoder_width: base width of the from-scratch encoders (doubles at each level up to 16x); ignored for timm.
    """

    encoder: str = "senet154"
    pretrained: str | None = None
    input_upsample: int = 2
    center_channels: int = 256
    decoder_channels: int | list[int] = 64
    oc_center: bool = True
    oc_decoder: bool = True
    scse: bool = False
    skip: str = "concat"
    dropout: float = 0.5
    oc_dropout: float = 0.05
    image_channels: int = 64
    fuse_channels: int = 64
    encoder_width: int = 64

    def __post_init__(self):
        if isinstance(self.decoder_channels, tuple):
            self.decoder_channels = list(self.decoder_channels)
        if self.skip not in SKIP_MODES:
            raise UserError(f"skip fusion {self.skip!r} is not one of {', '.join(SKIP_MODES)}")
        if self.input_upsample not in (1, 2, 4):
            raise UserError(f"input_upsample must be 1, 2 or 4, got {self.input_upsample!r}")
        for name in ("dropout", "oc_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {value!r}")
        widths = self.decoder_channels if isinstance(self.decoder_channels, list) else [self.decoder_channels]
        for name, value in [("center_channels", self.center_channels), ("image_channels", self.image_channels),
                            ("fuse_channels", self.fuse_channels), ("encoder_width", self.encoder_width),
                            *(("decoder_channels", w) for w in widths)]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"{name} must be a positive int, got {value!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            self.pretrained = str(self.pretrained)  # a pathlib.Path

    def to_dict(self) -> dict:
        """A dict of builtins (lists, not tuples)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; an unknown key is a UserError naming it and the close matches."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(names)})"
                raise UserError(f"unknown model option {key!r}{hint}")
        return cls(**d)

