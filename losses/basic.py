r"""Pixel binary cross-entropy and soft Dice, on logits, in float32 with autocast disabled.

- BCE: :math:`-\mathrm{mean}_{n,p}\,[y \log \sigma(x) + (1 - y) \log(1 - \sigma(x))]`, i.e.
  ``F.binary_cross_entropy_with_logits`` with ``reduction="mean"`` over every pixel of the batch.
- Soft Dice, per image then mean over images, with :math:`p = \sigma(x)` and smoothing :math:`s` (default 1):
  :math:`D_n = 1 - (2 \sum_p p\,y + s) / (\sum_p p + \sum_p y + s)`.
  The smoothing makes an empty-truth image cost :math:`\sum p / (\sum p + s)`: close to 0 when the prediction
  is empty too, close to 1 when it predicts many pixels.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from losses._common import as_float, check_pair, final_logits, flatten_pair, float32_region
from losses.base import Criterion, register_loss


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over all elements; any shape as long as both agree."""
    if logits.shape != target.shape:
        if logits.numel() != target.numel() or logits.shape[:1] != target.shape[:1]:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
        target = target.reshape(logits.shape)
    with float32_region(logits.device):
        x = as_float(logits)
        return F.binary_cross_entropy_with_logits(x, as_float(target).to(x.dtype))


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over images of the per-image soft Dice loss (see the module docstring)."""
    with float32_region(logits.device):
        x, y = flatten_pair(logits, target)
        if x.shape[0] == 0:
            return x.sum()
        p = torch.sigmoid(x)
        inter = (p * y).sum(1)
        dice = (2.0 * inter + smooth) / (p.sum(1) + y.sum(1) + smooth)
        return (1.0 - dice).mean()


@register_loss("bce", help="pixel binary cross-entropy with logits")
class BCE(Criterion):
    """Pixel BCE with logits on the final logits (``out`` or ``out["logits"]``)."""

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = final_logits(out)
        check_pair(logits, target)  # the same shape checks as every other pixel loss
        return {"loss": bce_loss(logits, target)}


@register_loss("dice", help="per-image soft Dice", takes=("smooth",))
class SoftDice(Criterion):
    """Per-image soft Dice loss on the final logits, mean over images; ``smooth`` > 0."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        if not smooth > 0:
            raise ValueError(f"smooth must be > 0, got {smooth}")
        self.smooth = float(smooth)

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": soft_dice_loss(final_logits(out), target, smooth=self.smooth)}

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}"
