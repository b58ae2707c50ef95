"""Helpers shared by every criterion: reading the model's output, flattening a (logits, target) pair, and the
float32 region that keeps the losses out of autocast."""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch


def final_logits(out: Any) -> torch.Tensor:
    """The final pixel logits: ``out`` itself when it is a tensor, ``out["logits"]`` when it is the model's dict."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if "logits" not in out:
            raise ValueError(f"model output has no 'logits' entry (keys: {sorted(out)})")
        return out["logits"]
    raise TypeError(f"expected a logits tensor or the model's output dict, got {type(out).__name__}")


def as_float(t: torch.Tensor) -> torch.Tensor:
    """At least float32: half types (and bool/integer masks) become float32; float32 and float64 are kept."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def float32_region(device: torch.device) -> contextlib.AbstractContextManager:
    """Disable autocast on ``device`` so that a loss computed inside an autocast region stays in float32.

    Inputs must still be cast (:func:`as_float`): disabling autocast only stops *new* ops from being cast down.
    """
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except (RuntimeError, ValueError):  # a device type without autocast support: nothing to disable
        return contextlib.nullcontext()


def check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    """Raise ValueError unless ``logits`` and ``target`` have the same batch size and spatial size (H, W)."""
    if logits.dim() < 2 or target.dim() < 2:
        raise ValueError(f"expected (N, 1, H, W) maps, got logits {tuple(logits.shape)}, target {tuple(target.shape)}")
    if logits.shape[0] != target.shape[0] or logits.shape[-2:] != target.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")


def flatten_pair(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that ``logits`` and ``target`` describe the same images and return both as (N, P), at least float32.

    ``logits`` is (N, 1, H, W) (or (N, H, W)); ``target`` is (N, 1, H, W) or (N, H, W), float 0/1 or bool. Only
    the batch size and the spatial size must agree, so any crop (e.g. the central 101x101) is fine.
    """
    check_pair(logits, target)
    x = as_float(logits).flatten(1)
    y = as_float(target).flatten(1)
    if x.shape != y.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    return x, y.to(x.dtype)
