"""The common interface of every criterion in this package.

``criterion(out, target)`` returns the scalar loss to back-propagate. ``out`` is either a logits tensor
(N, 1, H, W) or the model's output dict (``"logits"``, ``"aux"``, ``"image_logit"``); ``target`` is the mask
(N, 1, H, W), float 0/1 or bool.

For logging, ``criterion.components(out, target)`` returns a dict of named parts with the total under
``"loss"``, and every forward call keeps the parts of its last call, detached, in ``criterion.last_parts``
(tensors, so that logging them forces no device synchronisation until the caller asks for ``.item()``)::

    loss = criterion(out, masks)
    loss.backward()
    writer.add_scalars("loss", {k: v.item() for k, v in criterion.last_parts.items()}, step)

A single loss has only ``{"loss": value}``; combinations and the deep-supervision criterion add their parts
(unweighted values; the weighted sum is ``"loss"``).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from tgs.options import Declared
from tgs.registry import Registry

LOSSES = Registry("loss", "losses", normalise=lambda s: s.lower().replace("-", "_"))


def register_loss(name: str, *, help: str, takes: Iterable[str] = (), options: Iterable[Declared] = ()):
    """Register a criterion class or factory under ``name`` (see :mod:`losses.factory` for the spec grammar).

    ``takes``: keyword arguments ``build_loss`` may pass to it; ``options``: training options it reads (each a
    :class:`tgs.options.Declared` whose ``kwarg`` is the builder's keyword), gathered by ``engine.config`` into
    flags and config keys (``--focal-gamma``), noted as unused when the loss is not in ``--loss``."""
    options = tuple(options)
    return LOSSES.register(name, help=help, takes=tuple(takes) + tuple(o.kwarg for o in options), options=options)


class Criterion(nn.Module):
    """Base class: subclasses implement :meth:`components`; ``forward`` returns ``components(...)["loss"]``."""

    def __init__(self) -> None:
        super().__init__()
        self.last_parts: dict[str, torch.Tensor] = {}

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named parts of the loss (unweighted), with the total to back-propagate under ``"loss"``."""
        raise NotImplementedError

    def forward(self, out: Any, target: torch.Tensor) -> torch.Tensor:
        parts = self.components(out, target)
        self.last_parts = {k: v.detach() for k, v in parts.items()}
        return parts["loss"]
