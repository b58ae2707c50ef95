"""The salt UNet: encoder -> list of features -> decoder -> heads (segmentation_models_pytorch style).

Data flow for an (N, 1, H, W) input in [0, 1] (H, W multiples of ``model.size_divisor``, 32 for every usual
encoder):

1. repeat the grey channel to the encoder's 3 channels (a 3-channel input is accepted as is), normalise with
   the encoder's pretraining mean/std (buffers, so a checkpoint is self-contained); the input is never mutated;
2. optionally up-sample x2 (bilinear) -- the recipe feeds 128 -> 256 to the encoder;
3. encoder -> features at reductions r_0 < ... < r_{L-1} (2, 4, ..., 32 for timm CNNs);
4. deepest features -> context (3x3 conv + BN + ReLU -> OC block) -> centre block (3x3 conv + BN + ReLU);
5. L decoder blocks, deepest first; block i gets the previous output and the encoder features of the same
   scale, fuses them (concat / add / max / none), conv3x3+BN+ReLU -> [scSE] -> [OC] -> ConvTranspose2d(4, 2, 1)
   up to the next shallower scale (the last one up to the encoder input's resolution);
6. heads: hypercolumn of all decoder levels resized to the input resolution (bilinear up, area-average down
   when the input was up-sampled) -> 3x3 conv, concatenated with the image-level feature -> final pixel logit;
   a 1x1-conv deep-supervision logit per decoder level; the "has salt" image logit from the pooled deepest
   features.

Outputs (always the same keys, train or eval; float32 even under autocast), all at the INPUT resolution:
``{"logits": (N, 1, H, W), "aux": [(N, 1, H, W)] * L (deepest level first), "image_logit": (N,)}``.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tgs.errors import UserError

from .blocks import ConvBNReLU, DecoderBlock, ImageHead, OCBlock
from .config import ModelConfig
from .encoders import build_encoder
from .pretrained import load_encoder_weights


class SaltUNet(nn.Module):
    """UNet with a timm or from-scratch encoder, OC blocks, hypercolumn, deep supervision and an image head.

    Build it with :func:`build_model`. Attributes: ``config`` (the :class:`ModelConfig`), ``encoder`` (with
    ``out_channels``, ``reductions``, ``feature_info``), ``decoder`` (ModuleList, deepest block first),
    ``decoder_channels``, ``size_divisor`` (input sides must be multiples of it), buffers ``mean`` / ``std``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, config.pretrained, config.encoder_width)
        if config.pretrained not in (None, "", "imagenet"):
            load_encoder_weights(self.encoder, config.pretrained)
        self.register_buffer("mean", torch.tensor(self.encoder.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(self.encoder.std, dtype=torch.float32).view(1, -1, 1, 1))

        channels, reductions = self.encoder.out_channels, self.encoder.reductions
        levels = len(channels)
        widths = config.decoder_channels
        widths = list(widths) if isinstance(widths, list) else [widths] * levels
        if len(widths) != levels:
            raise UserError(f"decoder_channels has {len(widths)} widths but encoder {config.encoder!r} has "
                            f"{levels} feature levels: give {levels} widths or one int")
        self.decoder_channels = widths
        self.size_divisor = max(reductions)

        centre = config.center_channels
        self.context = nn.Sequential(ConvBNReLU(channels[-1], centre),
                                     OCBlock(centre, config.oc_dropout) if config.oc_center else nn.Identity())
        self.center = ConvBNReLU(centre, centre)

        blocks, in_ch = [], centre
        for i, level in enumerate(reversed(range(levels))):
            to = reductions[level - 1] if level > 0 else 1
            if reductions[level] % to:
                raise UserError(f"encoder {config.encoder!r} has feature reductions {reductions} that are not "
                                f"multiples of each other; it cannot feed this decoder")
            blocks.append(DecoderBlock(in_ch, channels[level], widths[i], skip=config.skip,
                                       factor=reductions[level] // to, oc=config.oc_decoder, scse=config.scse,
                                       oc_dropout=config.oc_dropout))
            in_ch = widths[i]
        self.decoder = nn.ModuleList(blocks)

        self.aux_heads = nn.ModuleList(nn.Conv2d(w, 1, kernel_size=1) for w in widths)
        self.image_head = ImageHead(channels[-1], config.image_channels, config.dropout)
        self.hypercolumn = nn.Sequential(nn.Dropout(config.dropout), ConvBNReLU(sum(widths), config.fuse_channels))
        self.logit = nn.Sequential(ConvBNReLU(config.fuse_channels + config.image_channels, config.fuse_channels),
                                   nn.Conv2d(config.fuse_channels, 1, kernel_size=1))

    # -- input -----------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """UserError unless ``x`` is (N, 1 or 3, H, W) float with H and W multiples of ``size_divisor``."""
        if x.dim() != 4:
            raise UserError(f"model input must be (N, 1, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise UserError(f"model input must be float in [0, 1], got {x.dtype} (see tgs.inputs.InputSpec)")
        if x.shape[1] not in (1, 3, self.encoder.in_chans):
            raise UserError(f"model input must have 1 or 3 channels, got {x.shape[1]}")
        d = self.size_divisor
        for side, value in (("height", x.shape[2]), ("width", x.shape[3])):
            if value % d:
                below, above = value // d * d, (value // d + 1) * d
                near = f"{below} or {above}" if below else f"{above}"
                raise UserError(f"input {side} {value} is not a multiple of {d} (encoder {self.config.encoder!r}): "
                                f"use {near}")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Grey -> encoder channels, ``(x - mean) / std``; returns a new tensor (``x`` is never modified)."""
        want = self.encoder.in_chans
        if x.shape[1] != want:
            x = x.expand(-1, want, -1, -1) if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
        return (x.to(self.mean.dtype) - self.mean) / self.std

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        self.check_input(x)
        size = tuple(x.shape[-2:])
        x = self.normalise(x)
        if self.config.input_upsample > 1:
            x = F.interpolate(x, scale_factor=self.config.input_upsample, mode="bilinear", align_corners=False)
        features = self.encoder(x)
        image_feature, image_logit = self.image_head(features[-1])

        d = self.center(self.context(features[-1]))
        levels = []
        for block, skip in zip(self.decoder, reversed(features)):
            d = block(d, skip)
            levels.append(d)

        # The hypercolumn and the heads work at the input resolution: with x2 up-sampling the finest decoder level
        # is area-averaged down (4x fewer FLOPs in the fusion convs than at the encoder's resolution).
        hyper = torch.cat([_resize(t, size) for t in levels], dim=1)
        pixel = self.hypercolumn(hyper)
        image_map = image_feature[:, :, None, None].expand(-1, -1, *size).to(pixel.dtype)
        logits = self.logit(torch.cat([pixel, image_map], dim=1))
        return {
            "logits": logits.float(),
            "aux": [_resize(head(t), size).float() for head, t in zip(self.aux_heads, levels)],
            "image_logit": image_logit.float(),
        }


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size``; an exact integer down-scale is an area (average-pool) reduction."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1]:
        return F.avg_pool2d(x, h // size[0])
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def build_model(config: ModelConfig | dict | None = None, **overrides: Any) -> SaltUNet:
    """Build a :class:`SaltUNet` from a :class:`ModelConfig`, a dict of its fields, or keyword arguments.

    ``build_model(encoder="resnet34", input_upsample=1)``; ``build_model(ModelConfig(pretrained=PATH))``.
    Unknown options and encoder names are UserErrors naming the close matches.
    """
    if config is None:
        config = ModelConfig.from_dict(overrides)
    elif isinstance(config, ModelConfig):
        config = ModelConfig.from_dict({**config.to_dict(), **overrides})  # a copy: the model owns its config
    elif isinstance(config, dict):
        config = ModelConfig.from_dict({**config, **overrides})
    else:
        raise TypeError(f"build_model takes a ModelConfig or a dict, got {type(config).__name__}")
    return SaltUNet(config)
