"""Load a local pretrained state dict into an encoder (timm or Cadene ``pretrainedmodels`` key format).

Accepted files (always read with ``torch.load(weights_only=True)``):

- a plain state dict, or one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``;
- keys in timm format (``conv1.weight``, ``layer1.0.conv1.weight``...) or Cadene format (for the SE family the
  keys of ``pretrainedmodels.senet154`` etc. equal timm's ``legacy_*`` models'; the classifier is
  ``last_linear``); ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes are stripped;
- keys that timm's ``features_only`` wrapper renamed (``features.0.weight`` -> ``features_0.weight``) are mapped.

Classifier keys (fc / last_linear / classifier / head) are ignored; other unmatched keys and encoder weights
missing from the file are reported by a logged warning listing a few; a shape mismatch is a UserError naming
the key and both shapes.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from tgs.errors import UserError, few

from .safeload import safe_torch_load

log = logging.getLogger(__name__)

CLASSIFIER_NAMES = ("fc", "last_linear", "classifier", "head", "head_drop", "pre_logits")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
OWNER_PREFIXES = ("encoder.model.", "encoder.", "model.", "backbone.")


@dataclass
class LoadReport:
    """What :func:`load_encoder_weights` did (lists of state-dict keys)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # classifier / head keys and keys the features model drops


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from ``{"state_dict"|"model": ...}``, wrapper prefixes stripped."""
    obj = safe_torch_load(path, what="pretrained weights")
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"pretrained weights {path} hold no state dict (found {type(obj).__name__})")
    tensors = {}
    for key, value in obj.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[strip_wrappers(key)] = value
    if not tensors:
        raise UserError(f"pretrained weights {path} hold no tensors keyed by name")
    return tensors


def strip_wrappers(key: str) -> str:
    """Drop leading ``module.`` (DDP / DataParallel) and ``_orig_mod.`` (torch.compile) prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _candidates(key: str) -> list[str]:
    bases = [key] + [key[len(p):] for p in OWNER_PREFIXES if key.startswith(p)]
    out = []
    for base in bases:
        out.append(base)
        if "." in base:
            out.append(base.replace(".", "_", 1))  # timm FeatureListNet flattens the first Sequential level
    return out


def _full_model_keys(timm_name: str | None) -> set[str]:
    """Keys of the complete timm model (with its head), built on the meta device (no memory, no init cost)."""
    if not timm_name:
        return set()
    import timm

    try:
        with torch.device("meta"):
            return set(timm.create_model(timm_name, pretrained=False).state_dict())
    except Exception:  # noqa: BLE001  (only used to tell "dropped by features_only" from "unexpected")
        return set()


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Copy the matching tensors of ``path`` into ``encoder`` (a TimmEncoder or UNetEncoder); see module doc."""
    source = read_state_dict(path)
    target_module = getattr(encoder, "model", encoder)
    target = target_module.state_dict()
    full_keys = None
    report = LoadReport()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        dest = next((c for c in _candidates(key) if c in target), None)
        if dest is None:
            head = key.split(".", 1)[0]
            if head in CLASSIFIER_NAMES:
                report.ignored.append(key)
                continue
            if full_keys is None:
                full_keys = _full_model_keys(getattr(encoder, "timm_name", None))
            (report.ignored if key in full_keys else report.unexpected).append(key)
            continue
        if tuple(value.shape) != tuple(target[dest].shape):
            raise UserError(f"pretrained weights {path}: {key!r} has shape {tuple(value.shape)} but the encoder's "
                            f"{dest!r} has shape {tuple(target[dest].shape)}; wrong architecture?")
        mapped[dest] = value
        report.loaded.append(dest)
    if not mapped:
        raise UserError(f"pretrained weights {path}: none of its {len(source)} tensors match the encoder "
                        f"(first keys: {few(sorted(source), 3)}); weights of another architecture?")
    target_module.load_state_dict(mapped, strict=False)
    report.missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    name = getattr(encoder, "timm_name", None) or type(encoder).__name__
    if report.missing:
        log.warning("pretrained weights %s: %d encoder weights of %s not in the file, left at random init: %s",
                    path, len(report.missing), name, few(report.missing))
    if report.unexpected:
        log.warning("pretrained weights %s: %d tensors do not belong to %s and were skipped: %s",
                    path, len(report.unexpected), name, few(report.unexpected))
    log.info("pretrained weights %s: loaded %d tensors into %s (%d classifier/unused keys ignored)",
             path, len(report.loaded), name, len(report.ignored))
    return report
