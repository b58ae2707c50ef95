"""One checkpoint format for every script (train, swa, test, ensembles).

A checkpoint is a ``torch.save``-d dict of plain tensors and builtins, read back with
``torch.load(weights_only=True)`` only::

    {
      "format": "tgs-salt-checkpoint", "format_version": 1,
      "model_config": ModelConfig.to_dict() with pretrained=None (the weights are in state_dict),
      "input_spec": tgs.inputs.InputSpec.to_dict() (pad or resize, size, border),
      "state_dict": {name: tensor} (torch.compile / DDP prefixes stripped),
      "meta": {"fold", "epoch", "metrics", ... as given, + "versions": {torch, timm, python, numpy}},
      "extra": None or train.py's resume state (optimizer / scheduler state dicts, step, RNG states as tensors),
    }

:func:`save_checkpoint` writes atomically (a crash never leaves a half-written file under the final name);
:func:`read_checkpoint` returns the validated raw dict; :func:`load` rebuilds the model from the file alone.
"""
from __future__ import annotations

import itertools
import logging
import os
import platform
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from tgs.errors import UserError, few
from tgs.inputs import InputSpec
from tgs.io import atomic_path

from .config import ModelConfig
from .pretrained import strip_wrappers
from .safeload import safe_torch_load
from .unet import SaltUNet, build_model

log = logging.getLogger(__name__)

FORMAT = "tgs-salt-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Loaded:
    """What :func:`load` returns: the model (eval mode), how images enter it, its config, the metadata and the
    resume state (``extra``, None when the file has none)."""

    model: SaltUNet
    input_spec: InputSpec
    config: ModelConfig
    meta: dict
    extra: dict | None = None


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint's meta (timm's from its package metadata: no import)."""
    from importlib import metadata

    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = "not installed"
    return {"torch": str(torch.__version__), "timm": timm_version, "numpy": str(np.__version__),
            "python": platform.python_version()}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` (``_orig_mod``) and DDP / DataParallel (``module``) wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors under keys without ``_orig_mod.`` / ``module.`` prefixes."""
    return {strip_wrappers(k): v.detach().cpu() for k, v in state_dict.items()}


def to_plain(obj: Any, where: str = "value") -> Any:
    """``obj`` with numpy scalars/arrays and Paths converted to builtins/tensors; anything a weights-only load
    could not read back is a TypeError naming where it sits (a programming error, caught at save time)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (bool, torch.dtype, torch.device, torch.Size)):
        return obj
    for kind in (int, float, complex, str, bytes):  # plain type, not a subclass (e.g. torch.__version__)
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            key = to_plain(key, f"{where} key")
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"{where}: dict key {key!r} cannot be stored in a checkpoint")
            out[key] = to_plain(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in a weights-only checkpoint "
                    f"(use tensors and builtins)")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, input_spec: InputSpec | dict,
                    meta: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` (a SaltUNet, possibly wrapped by torch.compile / DDP) atomically to ``path``.

    ``meta``: fold, epoch, metrics... (builtins; numpy values are converted); library versions are added.
    ``extra``: train.py's full resume state (optimizer / scheduler state dicts, step, RNG states as tensors),
    stored under its own key and given back by :func:`read_checkpoint` / :func:`load`.
    """
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError(f"save_checkpoint needs a model built by models.build_model, got {type(inner).__name__}")
    spec = input_spec if isinstance(input_spec, InputSpec) else InputSpec.from_dict(input_spec)
    meta = to_plain(dict(meta or {}), "meta")
    meta.setdefault("versions", versions())
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": {**config.to_dict(), "pretrained": None},
        "input_spec": spec.to_dict(),
        "state_dict": clean_state_dict(inner.state_dict()),
        "meta": meta,
        "extra": None if extra is None else to_plain(dict(extra), "extra"),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict, validated (format, version, key types); UserError naming the file otherwise."""
    obj = safe_torch_load(path, what="checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{path} is a bare state dict, not a checkpoint (it has no model config); use it as "
                            f"pretrained encoder weights or save with models.save_checkpoint")
        raise UserError(f"{path} is not a tgs-salt checkpoint (no format tag {FORMAT!r})")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f"checkpoint {path} has format_version {version!r}; this code reads up to {FORMAT_VERSION}")
    for key in ("model_config", "input_spec", "state_dict", "meta"):
        if not isinstance(obj.get(key), dict):
            raise UserError(f"checkpoint {path} is damaged: {key!r} is missing or not a dict")
    if obj.get("extra") is not None and not isinstance(obj["extra"], dict):
        raise UserError(f"checkpoint {path} is damaged: 'extra' is not a dict")
    bad = [k for k, v in obj["state_dict"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"checkpoint {path} is damaged: state_dict entry {bad[0]!r} is not a tensor")
    return obj


def model_from_checkpoint(raw: dict, path: str | os.PathLike = "<checkpoint>") -> SaltUNet:
    """Rebuild the model of a :func:`read_checkpoint` dict and load its weights (train mode, CPU)."""
    try:
        config = ModelConfig.from_dict({**raw["model_config"], "pretrained": None})
    except (UserError, TypeError) as exc:
        raise UserError(f"checkpoint {path}: bad model config: {exc}") from None
    state = raw["state_dict"]
    model = None
    try:  # fast path: build without allocating or initialising weights, then adopt the file's tensors
        with torch.device("meta"):
            candidate = build_model(config)
        candidate.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in itertools.chain(candidate.parameters(), candidate.buffers())):
            model = candidate
    except Exception:  # noqa: BLE001  (any trouble: the ordinary path below reports it properly)
        model = None
    if model is None:
        try:
            model = build_model(config)
        except UserError as exc:
            raise UserError(f"checkpoint {path}: cannot rebuild its model: {exc}") from None
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            line = next((s.strip() for s in str(exc).splitlines() if "size mismatch" in s), str(exc)[:200])
            raise UserError(f"checkpoint {path} does not fit its model config: {line}") from None
        if result.missing_keys or result.unexpected_keys:
            raise UserError(f"checkpoint {path} does not fit its model config: missing "
                            f"[{few(result.missing_keys, 3)}], unexpected [{few(result.unexpected_keys, 3)}]")
    return model


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild a checkpoint's model with nothing else known; returns :class:`Loaded` (model in eval mode)."""
    raw = read_checkpoint(path)
    try:
        spec = InputSpec.from_dict(raw["input_spec"])
    except (UserError, TypeError) as exc:
        raise UserError(f"checkpoint {path}: bad input spec: {exc}") from None
    model = model_from_checkpoint(raw, path).to(device).eval()
    return Loaded(model=model, input_spec=spec, config=model.config, meta=raw["meta"], extra=raw.get("extra"))
