"""Learning-rate schedules, all stepped once per epoch; each registered once in :data:`SCHEDULES` with the options
it reads (``--lr-scheduler`` choices, its options' flags and the "not used with" notes all come from there).

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

from tgs.options import Declared, Option
from tgs.registry import Registry

SCHEDULES = Registry("learning-rate schedule")


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


MIN_LR = Declared("min_lr", 1e-6, Option("float", "cos/clr floor, plateau minimum", low=0.0), "min_lr")
STEP_EPOCHS = Declared("step_epochs", 30, Option("int", "step: epochs between decays; clr: half cycle", low=1),
                       "step_epochs")


def _min_factor(base_lr: float, min_lr: float) -> float:
    return min_lr / base_lr if base_lr > 0 else 0.0


@SCHEDULES.register("noam", help="the recipe's warm-up then 1/sqrt(epoch) decay", options=(
    Declared("warmup_epochs", 10, Option("int", "noam warm-up w", low=1), "warmup"),))
def _noam(optimizer, base_lr: float, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Noam(warmup))


@SCHEDULES.register("cos", help="cosine annealing with warm restarts (a snapshot model per cycle)", options=(
    Declared("cycle_epochs", 50, Option("int", "cos: epochs per restart cycle (a snapshot each)", low=1), "cycle"),
    MIN_LR))
def _cos(optimizer, base_lr: float, cycle: int, min_lr: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineRestarts(cycle, _min_factor(base_lr, min_lr)))


@SCHEDULES.register("clr", help="triangular cyclical rate between min_lr and the base rate",
                    options=(STEP_EPOCHS, MIN_LR))
def _clr(optimizer, base_lr: float, step_epochs: int, min_lr: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Triangular(step_epochs, _min_factor(base_lr, min_lr)))


@SCHEDULES.register("step", help="multiply by gamma every step_epochs", options=(
    STEP_EPOCHS, Declared("gamma", 0.1, Option("float", "step: decay factor", low=0.0, open_low=True, high=1.0),
                          "gamma")))
def _step(optimizer, base_lr: float, step_epochs: int, gamma: float):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_epochs, gamma=gamma)


@SCHEDULES.register("plateau", help="multiply by a factor when the validation metric stalls", options=(
    Declared("plateau_patience", 10, Option("int", "plateau: epochs without a better metric before a decay", low=0),
             "patience"),
    Declared("plateau_factor", 0.5, Option("float", "plateau: decay factor", low=0.0, high=1.0, open_low=True,
                                           open_high=True), "factor"),
    MIN_LR))
def _plateau(optimizer, base_lr: float, patience: int, factor: float, min_lr: float):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience,
                                                      min_lr=min_lr)


def build(name: str, optimizer: torch.optim.Optimizer, *, base_lr: float, **kwargs):
    """The scheduler object for ``name`` (keyword arguments: the entry's options' ``kwarg`` names; missing ones take
    their declared defaults); ``plateau`` steps with the metric, the others with no argument."""
    entry = SCHEDULES.get(name)
    args = {d.kwarg: kwargs.pop(d.kwarg, d.default) for d in entry.options}
    if kwargs:
        raise TypeError(f"schedule {name!r} takes no {', '.join(sorted(kwargs))}")
    return entry.obj(optimizer, base_lr, **args)


def step(scheduler, metric: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(metric)
    else:
        scheduler.step()

