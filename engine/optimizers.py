"""Optimisers, each registered once in :data:`OPTIMIZERS` with the options it reads (``--optim`` choices, its
options' flags and the "not used with" notes come from here). A builder takes the parameters, the learning rate,
the weight decay and its own declared options."""
from __future__ import annotations

import torch

from tgs.options import Declared, Option
from tgs.registry import Registry

OPTIMIZERS = Registry("optimiser")


@OPTIMIZERS.register("sgd", help="SGD with momentum", options=(
    Declared("momentum", 0.9, Option("float", "sgd", low=0.0, high=1.0, open_high=True), "momentum"),))
def _sgd(params, lr: float, weight_decay: float, momentum: float):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam", help="Adam, L2 weight decay", options=())
def _adam(params, lr: float, weight_decay: float):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw", help="AdamW, decoupled weight decay (the recipe)", options=())
def _adamw(params, lr: float, weight_decay: float):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build(name: str, params, *, lr: float, weight_decay: float, **kwargs) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params`` (keyword arguments: its options' ``kwarg`` names, else defaults)."""
    entry = OPTIMIZERS.get(name)
    args = {d.kwarg: kwargs.pop(d.kwarg, d.default) for d in entry.options}
    if kwargs:
        raise TypeError(f"optimiser {name!r} takes no {', '.join(sorted(kwargs))}")
    return entry.obj(params, lr, weight_decay, **args)
