"""Learning-rate schedules, all stepped once per epoch.

- ``noam`` (the recipe): lr = base * sqrt(w) * min(e^-0.5, e * w^-1.5), e = epoch + 1, w = warm-up epochs: a linear
  warm-up to ``base`` at epoch w, then decay as 1/sqrt(e).
- ``cos``: cosine annealing with warm restarts every ``cycle`` epochs down to ``min_lr`` (the 1st and 4th places'
  snapshot ensembles: train.py saves a model at the end of each cycle).
- ``clr``: triangular cyclical lr between ``min_lr`` and ``base`` with a half-cycle of ``step_epochs``.
- ``step``: multiply by ``gamma`` every ``step_epochs``.
- ``plateau``: multiply by ``factor`` when the validation metric has not improved for ``patience`` epochs.
"""
from __future__ import annotations

import math

import torch

from tgs.errors import UserError

NAMES = ("noam", "cos", "clr", "step", "plateau")


class Noam:
    def __init__(self, warmup: int):
        self.warmup = max(1, int(warmup))

    def __call__(self, epoch: int) -> float:
        e, w = epoch + 1, self.warmup
        return math.sqrt(w) * min(e ** -0.5, e * w ** -1.5)


class CosineRestarts:
    def __init__(self, cycle: int, min_factor: float):
        self.cycle = max(1, int(cycle))
        self.min_factor = float(min_factor)

    def __call__(self, epoch: int) -> float:
        t = (epoch % self.cycle) / self.cycle
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    def cycle_ends(self, epoch: int) -> bool:
        return (epoch + 1) % self.cycle == 0


class Triangular:
    def __init__(self, step_epochs: int, min_factor: float):
        self.step = max(1, int(step_epochs))
        self.min_factor = float(min_factor)

    def __call__(self, epoch: int) -> float:
        pos = epoch % (2 * self.step)
        up = pos / self.step if pos <= self.step else (2 * self.step - pos) / self.step
        return self.min_factor + (1 - self.min_factor) * up


def build(name: str, optimizer: torch.optim.Optimizer, *, base_lr: float, warmup: int = 10, cycle: int = 50,
          min_lr: float = 1e-6, step_epochs: int = 30, gamma: float = 0.1, patience: int = 10,
          factor: float = 0.5):
    """The scheduler object; ``plateau`` steps with the metric, the others with no argument."""
    min_factor = min_lr / base_lr if base_lr > 0 else 0.0
    if name == "noam":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, Noam(warmup))
    if name == "cos":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineRestarts(cycle, min_factor))
    if name == "clr":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, Triangular(step_epochs, min_factor))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_epochs, gamma=gamma)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience,
                                                          min_lr=min_lr)
    raise UserError(f"--lr-scheduler {name!r} is not one of {', '.join(NAMES)}")


def step(scheduler, metric: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()


def snapshot_due(scheduler, epoch: int) -> bool:
    """True at the last epoch of a cosine cycle (a snapshot model is saved then)."""
    lam = getattr(scheduler, "lr_lambdas", [None])[0]
    return isinstance(lam, CosineRestarts) and lam.cycle_ends(epoch)
