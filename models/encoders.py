"""Encoders: any timm ``features_only`` model, or a from-scratch UNet encoder.

An encoder maps a normalised (N, in_chans, H, W) tensor to a list of feature maps, shallowest first, and
describes them like timm: ``out_channels``, ``reductions`` (stride of each map w.r.t. the encoder input) and
``feature_info`` (a list of ``{"num_chs", "reduction", "module"}`` dicts). It also carries the normalisation of
its pretraining (``mean``, ``std`` tuples; the model keeps them as buffers).
"""
from __future__ import annotations

import difflib
import fnmatch
import functools

import torch
import torch.nn as nn

import tgs.compat  # noqa: F401  (before timm/torchvision; timm itself is imported when a timm encoder is asked for)
from tgs.errors import UserError
from tgs.registry import Registry

from .blocks import ConvBNReLU

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCRATCH_MEAN = (0.5,)
SCRATCH_STD = (0.25,)


def list_encoders(pattern: str = "*") -> list[str]:
    """Encoder names the factory accepts (from-scratch names, recipe aliases, timm models) matching ``pattern``.

    Not every timm model supports ``features_only``; the factory says so with a clear error when one does not.
    """
    import timm

    names = list(dict.fromkeys([*SCRATCH_ENCODERS, *sorted(ALIASES), *timm.list_models()]))
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def resolve_encoder(name: str) -> str | None:
    """timm name for ``name`` (alias resolved), None for a from-scratch encoder; unknown -> UserError with close
    matches."""
    if name in SCRATCH_ENCODERS:
        return None
    import timm

    timm_name = ALIASES.get(name, name)
    if timm.is_model(timm_name):
        return timm_name
    candidates = list(dict.fromkeys([*SCRATCH_ENCODERS, *ALIASES, *timm.list_models()]))
    close = difflib.get_close_matches(name, candidates, n=6, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see models.list_encoders()"
    raise UserError(f"unknown encoder {name!r}; {hint}")


class TimmEncoder(nn.Module):
    """A timm model created with ``features_only=True`` (kept as ``self.model``, so its state-dict keys are
    ``model.<timm key>``)."""

    def __init__(self, timm_name: str, pretrained: bool = False):
        super().__init__()
        self.timm_name = timm_name
        import timm

        try:
            self.model = timm.create_model(timm_name, features_only=True, pretrained=pretrained)
        except Exception as exc:  # noqa: BLE001  (timm raises assorted types; the message says what went wrong)
            text = " ".join(str(exc).split()) or type(exc).__name__
            if pretrained:
                raise UserError(
                    f"cannot get ImageNet weights for encoder {timm_name!r} ({type(exc).__name__}: {text[:160]}); "
                    f"offline, pass a local file instead: pretrained=/path/to/weights.pth (a timm or Cadene "
                    f"pretrainedmodels state dict)") from exc
            if "features_only" in text or isinstance(exc, (NotImplementedError, AssertionError)):
                raise UserError(f"encoder {timm_name!r} cannot be used: timm cannot build it with features_only "
                                f"({text[:160]})") from exc
            raise
        info = self.model.feature_info
        self.out_channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for c, r, m in zip(self.out_channels, self.reductions, info.module_name())]
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", IMAGENET_STD))
        self.in_chans = 3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.model(x)
        return list(out.values()) if isinstance(out, dict) else list(out)


class UNetEncoder(nn.Module):
    """From-scratch UNet encoder: a double 3x3 conv (+BN+ReLU) at full resolution, then ``depth`` levels each
    halving the resolution, by max-pool (classic UNet, ``pool=True``) or by a stride-2 3x3 convolution (the
    "no-pool" UNet), followed by a 3x3 conv. Widths ``width * 2**i`` capped at ``16 * width``; features at
    reductions 1, 2, ..., 2**depth. Single-channel input, normalised with mean 0.5 and std 0.25."""

    def __init__(self, width: int = 64, depth: int = 5, pool: bool = True, in_chans: int = 1):
        super().__init__()
        widths = [width * 2 ** min(i, 4) for i in range(depth + 1)]
        stages = [nn.Sequential(ConvBNReLU(in_chans, widths[0]), ConvBNReLU(widths[0], widths[0]))]
        for prev, cur in zip(widths[:-1], widths[1:]):
            if pool:
                stages.append(nn.Sequential(nn.MaxPool2d(2), ConvBNReLU(prev, cur), ConvBNReLU(cur, cur)))
            else:
                stages.append(nn.Sequential(ConvBNReLU(prev, cur, stride=2), ConvBNReLU(cur, cur)))
        self.stages = nn.ModuleList(stages)
        self.out_channels = widths
        self.reductions = [2 ** i for i in range(depth + 1)]
        self.feature_info = [dict(num_chs=c, reduction=r, module=f"stages.{i}")
                             for i, (c, r) in enumerate(zip(self.out_channels, self.reductions))]
        self.mean, self.std = SCRATCH_MEAN * in_chans, SCRATCH_STD * in_chans
        self.in_chans = in_chans
        self.timm_name = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


# -- the named encoders: from-scratch ones and recipe aliases (every other timm model is taken by its timm name) --
ENCODERS = Registry("encoder")
ENCODERS.add("unet", functools.partial(UNetEncoder, pool=True), scratch=True,
             help="from scratch: the classic UNet encoder (double conv + max-pool)")
ENCODERS.add("unet_nopool", functools.partial(UNetEncoder, pool=False), scratch=True,
             help="from scratch: the UNet encoder down-sampling by a stride-2 convolution")
# Recipe / Cadene ``pretrainedmodels`` names -> timm names. The SE family maps to timm's ``legacy_*`` models,
# whose state-dict keys are exactly Cadene's, so Cadene weight files load as they are.
# timm has models of its own called senet154 (and seresnext*) with other keys: the alias wins here.
for _alias, _timm in (("senet154", "legacy_senet154"), ("se_resnet18", "legacy_seresnet18"),
                      ("se_resnet34", "legacy_seresnet34"), ("se_resnet50", "legacy_seresnet50"),
                      ("se_resnet101", "legacy_seresnet101"), ("se_resnet152", "legacy_seresnet152"),
                      ("se_resnext26_32x4d", "legacy_seresnext26_32x4d"),
                      ("se_resnext50_32x4d", "legacy_seresnext50_32x4d"),
                      ("se_resnext101_32x4d", "legacy_seresnext101_32x4d"), ("xception", "legacy_xception")):
    ENCODERS.add(_alias, _timm, scratch=False, help=f"recipe alias of timm's {_timm} (Cadene's state-dict keys)")
SCRATCH_ENCODERS: tuple[str, ...] = tuple(e.name for e in ENCODERS.entries() if e.scratch)
ALIASES: dict[str, str] = {e.name: e.obj for e in ENCODERS.entries() if not e.scratch}


def build_encoder(name: str, pretrained: str | None = None, width: int = 64) -> nn.Module:
    """Build the encoder ``name``; ``pretrained="imagenet"`` asks timm for its weights (local files are loaded by
    the caller, see :func:`models.pretrained.load_encoder_weights`)."""
    timm_name = resolve_encoder(name)
    if timm_name is None:
        if pretrained == "imagenet":
            raise UserError(f"encoder {name!r} is trained from scratch: it has no ImageNet weights "
                            f"(use pretrained=None or a local file)")
        return ENCODERS.get(name).obj(width=width)
    return TimmEncoder(timm_name, pretrained=(pretrained == "imagenet"))
