r"""Binary focal loss (Lin et al., 2017) on the final logits, in float32 with autocast disabled.

:math:`FL = -\mathrm{mean}_{n,p}\,[y (1-p)^\gamma \log p + (1-y) p^\gamma \log (1-p)]`, :math:`p = \sigma(x)`:
BCE whose easy pixels (confidently right) are down-weighted by :math:`(1-p_t)^\gamma`; :math:`\gamma = 0` is BCE.
The training option ``--focal-gamma`` (config key ``focal_gamma``) is declared here, on the loss's registry entry.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from losses._common import as_float, check_pair, final_logits, float32_region
from losses.base import Criterion, register_loss
from tgs.options import Declared, Option


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean binary focal loss over every element (see the module docstring)."""
    with float32_region(logits.device):
        x = as_float(logits)
        y = as_float(target).to(x.dtype).reshape(x.shape)
        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_true = torch.exp(-bce)  # the probability given to the true class
        return ((1.0 - p_true).pow(gamma) * bce).mean()


@register_loss("focal", help="binary focal loss, (1 - p_t)^gamma * BCE", options=(
    Declared("focal_gamma", 2.0, Option("float", "focal: the focusing exponent gamma (0: BCE)", low=0.0, high=10.0),
             "gamma"),))
class FocalLoss(Criterion):
    """Binary focal loss on the final logits (``out`` or ``out["logits"]``); ``gamma`` >= 0."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= float(gamma) < float("inf"):
            raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = final_logits(out)
        check_pair(logits, target)
        return {"loss": focal_loss(logits, target, self.gamma)}

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}"
