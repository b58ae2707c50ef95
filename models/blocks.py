"""Building blocks of the salt UNet: conv-BN-ReLU, OCNet's base object-context block, scSE, decoder block, heads.

Every block is size-agnostic (no spatial size is baked in) and works in channels_last and under autocast.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SKIP_MODES = ("concat", "add", "max", "none")


class ConvBNReLU(nn.Sequential):
    """``Conv2d(k, padding=k//2, bias=False) -> BatchNorm2d -> ReLU`` (ReLU optional)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 relu: bool = True):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SelfAttention2d(nn.Module):
    """OCNet's self-attention over all spatial positions (``SelfAttentionBlock2D``, scale 1).

    Query and key share one projection (1x1 conv + BN + ReLU to ``key_channels``), the value is a 1x1 conv to
    ``value_channels``; ``context = softmax(Q K^T / sqrt(key_channels)) V`` computed with
    :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels where available,
    so memory is linear in the number of positions), then projected back to ``out_channels`` by a 1x1 conv whose
    weight and bias start at zero: at initialisation the block outputs zeros.
    """

    def __init__(self, in_channels: int, key_channels: int, value_channels: int, out_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.f_key = ConvBNReLU(in_channels, key_channels, kernel_size=1)  # shared by query and key (OCNet)
        self.f_value = nn.Conv2d(in_channels, value_channels, 1)
        self.proj = nn.Conv2d(value_channels, out_channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key, value as (N, 1, H*W, C) sequences (one head), channels innermost: the fused SDPA kernels
        (CPU flash attention included) need a unit stride on the last dim, else torch falls back to the O(L^2)
        memory math path. A no-op copy for channels_last activations."""
        k = self.f_key(x).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        v = self.f_value(x).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        return k, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        q, k, v = self.qkv(x)
        # SDPA wants one dtype for q, k, v: under autocast the convs already agree; outside, they are x's dtype.
        context = F.scaled_dot_product_attention(q, k, v)  # (N, 1, HW, Cv), default scale 1/sqrt(Ck)
        context = context.squeeze(1).transpose(1, 2).reshape(n, -1, h, w)
        return self.proj(context)


class OCBlock(nn.Module):
    """OCNet "base OC" block: self-attention context concatenated with the input, fused by 1x1 conv + BN + ReLU
    + Dropout2d. Key and value channels are ``channels // 2``; the attention's output projection is zero-initialised,
    so at initialisation ``OCBlock(x) == fuse(cat([0, x]))``.
    """

    def __init__(self, channels: int, dropout: float = 0.05):
        super().__init__()
        half = max(1, channels // 2)
        self.attention = SelfAttention2d(channels, half, half, channels)
        self.fuse = nn.Sequential(ConvBNReLU(2 * channels, channels, kernel_size=1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.attention(x), x], dim=1))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (Roy et al. 2018): ``x*cSE(x) + x*sSE(x)``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.cse = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cse(x) + x * self.sse(x)


def upsampler(channels: int, factor: int) -> nn.Module:
    """x``factor`` learnt up-sampling: ``ConvTranspose2d(k=2f, s=f, p=f/2)`` (k=4, s=2, p=1 for f=2); identity for 1."""
    if factor == 1:
        return nn.Identity()
    if factor < 1 or factor % 2:
        raise ValueError(f"decoder up-sampling factor must be 1 or even, got {factor}")
    return nn.ConvTranspose2d(channels, channels, kernel_size=2 * factor, stride=factor, padding=factor // 2)


class DecoderBlock(nn.Module):
    """One decoder level: fuse(previous, skip) -> conv3x3+BN+ReLU -> [scSE] -> [OC] -> up-sample x``factor``.

    ``skip`` fusion: ``concat`` (channel concatenation), ``add`` / ``max`` (the skip is first projected to the
    previous output's width by 1x1 conv + BN + ReLU), ``none`` (the skip is ignored).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, *, skip: str = "concat",
                 factor: int = 2, oc: bool = False, scse: bool = False, oc_dropout: float = 0.05):
        super().__init__()
        if skip not in SKIP_MODES:
            raise ValueError(f"skip {skip!r} is not one of {SKIP_MODES}")
        self.skip_mode = skip
        self.skip_proj = (ConvBNReLU(skip_channels, in_channels, kernel_size=1)
                          if skip in ("add", "max") else None)
        conv_in = in_channels + skip_channels if skip == "concat" else in_channels
        self.conv = ConvBNReLU(conv_in, out_channels)
        self.scse = SCSE(out_channels) if scse else nn.Identity()
        self.oc = OCBlock(out_channels, oc_dropout) if oc else nn.Identity()
        self.up = upsampler(out_channels, factor)

    def fuse(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.skip_mode == "concat":
            return torch.cat([x, skip], dim=1)
        if self.skip_mode == "add":
            return x + self.skip_proj(skip)
        if self.skip_mode == "max":
            return torch.maximum(x, self.skip_proj(skip))
        return x

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.fuse(x, skip))
        return self.up(self.oc(self.scse(x)))


class ImageHead(nn.Module):
    """Image-level branch: global average pool of the deepest features -> dropout -> Linear+ReLU (the image
    feature fused into the pixel logit) -> Linear (the "has salt" logit)."""

    def __init__(self, in_channels: int, channels: int, dropout: float):
        super().__init__()
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, channels), nn.ReLU(inplace=True))
        self.classify = nn.Linear(channels, 1)

    def forward(self, deepest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.embed(deepest.mean(dim=(2, 3)))
        return feature, self.classify(feature).squeeze(1)
