"""The one place that reads torch files: always ``torch.load(map_location="cpu", weights_only=True)``.

A file that needs code to load (a pickle referring to any global outside torch's weights-only allow-list, e.g.
``os.system``), a file that is not a torch file, and a truncated or corrupt file are all refused with one
:class:`~tgs.errors.UserError` line naming the file. Nothing in the file is ever executed.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from tgs.errors import UserError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _refusal_reason(message: str) -> str:
    """The informative line of torch's long weights-only error (e.g. ``unsupported GLOBAL posix.system``)."""
    lines = [_ANSI.sub("", line).strip() for line in message.splitlines()]
    for line in lines:
        match = re.search(r"GLOBAL ([\w.]+)", line)
        if match:
            return f"it refers to {match.group(1)}"  # a global outside torch's allow-list
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip() or next((x for x in lines[i + 1:] if x), "")
            return rest.rstrip(".")
    return "the weights-only loader refused it"


def safe_torch_load(path: str | os.PathLike, what: str = "file") -> Any:
    """Load ``path`` with ``weights_only=True`` on the CPU; every failure is a one-line UserError naming it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    if not path.is_file():
        raise UserError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            reason = _refusal_reason(text)
            if reason.startswith("it refers to"):
                raise UserError(f"refusing {what} {path}: loading it would run code ({reason}); only weights-only "
                                f"torch files (plain tensors and builtins) are accepted") from None
            raise UserError(f"refusing {what} {path}: the weights-only loader cannot read it ({reason}); it is not "
                            f"a torch file of plain tensors and builtins, or it is corrupt") from None
        raise UserError(f"{what} {path} is not a torch file ({' '.join(text.split())[:120]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        text = " ".join(str(exc).split())
        if isinstance(exc, EOFError) or re.search(r"corrupt|EOF|failed reading|central directory", text, re.I):
            raise UserError(f"{what} {path} is truncated or corrupt ({text.split('. ')[0][:120]})") from None
        raise UserError(f"{what} {path} cannot be read as a torch file ({text[:160]})") from None
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path} is not a torch file ({type(exc).__name__}: {str(exc)[:80]})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
