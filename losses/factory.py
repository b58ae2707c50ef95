"""``build_loss(spec, **kwargs)``: a criterion from a name or a weighted combination string.

Spec grammar: terms separated by ``+`` or ``,``; each term is ``name`` (weight 1) or ``name:weight``.
Examples: ``"deep"``, ``"lovasz"``, ``"bce+dice"`` (= 1 * BCE + 1 * Dice),
``"lovasz:0.7,bce:0.15,dice:0.15"`` (seed 003's mix). Names are case-insensitive; ``-`` reads as ``_``.

The names are :data:`losses.base.LOSSES`'s (each loss module registers its own with ``@register_loss``).
Keyword arguments go to every term whose registry entry takes them (``activation`` for the Lovasz losses,
``smooth`` for Dice, ``image_weight``/``aux_weight``/``final_weight`` for ``deep``, ``gamma`` for ``focal``); one
that no term takes is an error, so a typo never passes silently. Mistakes in the spec or the arguments raise
:class:`tgs.errors.UserError` naming the valid choices.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch

import losses.basic  # noqa: F401  (each module registers its losses)
import losses.deep  # noqa: F401
import losses.focal  # noqa: F401
import losses.lovasz  # noqa: F401
from losses.base import LOSSES, Criterion
from tgs.errors import UserError


class WeightedSum(Criterion):
    """``sum_i weight_i * term_i(out, target)``.

    ``components`` gives each term's unweighted value under its name (a term with parts of its own, e.g.
    ``deep``, also adds them as ``name/part``) and the weighted total under ``"loss"``.
    """

    def __init__(self, terms: list[tuple[str, float, Criterion]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a weighted sum needs at least one term")
        self.names = [name for name, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.terms = torch.nn.ModuleDict({name: module for name, _, module in terms})

    def components(self, out: Any, target: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        total = None
        for name, weight in zip(self.names, self.weights):
            sub = self.terms[name].components(out, target)
            parts[name] = sub["loss"]
            parts.update({f"{name}/{k}": v for k, v in sub.items() if k != "loss"})
            total = weight * sub["loss"] if total is None else total + weight * sub["loss"]
        parts["loss"] = total
        return parts

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for n, w in zip(self.names, self.weights))


def _valid() -> str:
    return LOSSES.valid()


def _lookup(raw: str) -> str:
    return LOSSES.lookup(raw)


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """``"lovasz:0.7,bce:0.15"`` -> ``[("lovasz", 0.7), ("bce", 0.15)]``; raises UserError on any mistake."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"empty loss spec; give a name or e.g. 'lovasz:0.7,bce:0.15,dice:0.15' ({_valid()})")
    terms: list[tuple[str, float]] = []
    for raw in re.split(r"[+,]", spec):
        if not raw.strip():
            raise UserError(f"loss spec {spec!r} has an empty term")
        name_part, sep, weight_part = raw.partition(":")
        name = _lookup(name_part)
        weight = 1.0
        if sep:
            try:
                weight = float(weight_part)
            except ValueError:
                raise UserError(f"loss weight {weight_part.strip()!r} in {spec!r} is not a number") from None
            if not (math.isfinite(weight) and weight >= 0):
                raise UserError(f"loss weight {weight_part.strip()!r} in {spec!r} must be finite and >= 0")
        if any(name == n for n, _ in terms):
            raise UserError(f"loss {name!r} appears twice in {spec!r}")
        terms.append((name, weight))
    if all(w == 0 for _, w in terms):
        raise UserError(f"loss spec {spec!r}: every weight is 0 (nothing would be learned)")
    return terms


def build_loss(spec: str, **kwargs: Any) -> Criterion:
    """A criterion for ``spec`` (see the module docstring); a single unweighted name gives the bare criterion."""
    terms = parse_spec(spec)
    accepted = {k for name, _ in terms for k in LOSSES.get(name).takes}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        took = ", ".join(sorted(accepted)) or "none"
        raise UserError(f"loss {spec!r} takes no argument {', '.join(unknown)} (it takes: {took})")
    built = []
    for name, weight in terms:
        entry = LOSSES.get(name)
        make, keys = entry.obj, entry.takes
        try:
            module = make(**{k: v for k, v in kwargs.items() if k in keys})
        except (ValueError, TypeError) as exc:
            raise UserError(f"loss {name!r}: {exc}") from None
        built.append((name, weight, module))
    if len(built) == 1 and built[0][1] == 1.0:
        return built[0][2]
    return WeightedSum(built)
