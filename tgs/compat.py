"""Make torchvision (and therefore timm) importable on a CPU-only torch.

The PyPI torchvision wheel pinned next to ``torch==2.13.0`` is a CUDA build. On the local CPU build of torch
its C extension cannot be loaded, so the ``torchvision::*`` operators are never defined, and importing
torchvision then fails while it registers fake (meta) kernels for ``torchvision::nms`` and
``torchvision::qnms``: ``RuntimeError: operator torchvision::nms does not exist``. timm imports torchvision,
so timm fails too.

Defining those two operator schemas (without any kernel) before the first torchvision import is enough for
the import to succeed; nothing in this project calls NMS. Where the extension does load (a matching CUDA
torch), the schemas already exist and this module does nothing.

Import this module before torchvision or timm: ``import tgs.compat  # noqa: F401``.
"""
from __future__ import annotations

import os

import torch

# albumentations checks PyPI for a newer version at import time; there is no network here.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_OPS = ("nms", "qnms")
_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_LIBRARY = None  # kept alive for the life of the process: dropping it would undefine the schemas


def _defined(qualified: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualified, "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_importable() -> list[str]:
    """Define the missing schemas; return the names defined here (empty when the extension loaded)."""
    global _LIBRARY
    missing = [op for op in _OPS if not _defined(f"torchvision::{op}")]
    if missing:
        if _LIBRARY is None:
            _LIBRARY = torch.library.Library("torchvision", "DEF")
        for op in missing:
            _LIBRARY.define(op + _SCHEMA)
    return missing


def _extension_loadable() -> bool:
    """True when torchvision's compiled ops can register themselves (checked without importing torchvision)."""
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = spec.submodule_search_locations[0]
    ext = [f for f in os.listdir(folder) if f.startswith("_C") and f.endswith((".so", ".pyd"))]
    if not ext:
        return False
    try:
        torch.ops.load_library(os.path.join(folder, ext[0]))
        return True
    except (OSError, RuntimeError):
        return False


DEFINED_HERE = [] if _extension_loadable() else ensure_torchvision_importable()
