"""How an option is declared: its kind, help, choices and range, in one place for every script and registry.

A training option is a field of one of ``engine.config``'s sections (``opt(default, kind, help, ...)``); an option
that belongs to one registered thing (a loss's weight, a schedule's period) is declared on that thing's registry
entry with the same :class:`Option`, and the configuration gathers it from there. :meth:`Option.coerce` checks
every value against its declaration, from a flag, a config file or a checkpoint (``engine.config.coerce`` by the
option's name); the post-processing setting (``tgs.postprocess.PostProcess``) declares its values the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from tgs.errors import UserError, excerpt

NONE_WORDS = ("none", "off")  # an optional number given on the command line as one of these is None


@dataclass(frozen=True)
class Option:
    """How one option is given and checked. ``kind``: int, float, str, path, bool or choice; ``low``/``high``:
    inclusive bounds unless ``open_low``/``open_high``; ``optional``: None (YAML ``null``) is allowed;
    ``check(value)``: a further test returning the problem as text, or None. What a value changes:
    ``run_only``: only where and how the run runs (device, threads, folders), never its result, so a finished
    model made with another value is reused; ``resumable``: may change when a run is resumed (also how long it
    trains); ``repeated=False``: about this invocation only (not written to config.yaml, not re-applied).
    Where ensemble.py passes a script's options on (train.py's, swa.py's, test.py's): ``ensemble``: it sets this
    option itself and refuses it, saying instead the ensemble.py flag to use (``--folds``) or, not a flag, what it
    does (``is automatic ...``); ``shared``: a training option it also gives to the SWA and prediction steps."""

    kind: str
    help: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    check: Callable[[Any], str | None] | None = None
    run_only: bool = False
    resumable: bool = False
    repeated: bool = True
    used_with: tuple = ()  # (the deciding option, the values that use this one); registry entries' are derived
    ensemble: str = ""
    shared: bool = False

    def coerce(self, value: Any, where: str, text: bool = False) -> Any:
        """``value`` as this option's type, or a UserError ``{where}: {problem}``. ``text``: the value is a
        command-line string (``"32"``; ``none``/``off`` for an optional number), else a YAML/JSON/checkpoint value
        whose type must already be right (``2.5`` is no batch size, ``"yes"`` no bool)."""

        def bad(problem: str):
            raise UserError(f"{where}: {problem}")

        if text and self.optional and self.kind in ("int", "float") and str(value).lower() in NONE_WORDS:
            value = None
        if value is None:
            if self.optional:
                return None
            bad("a value is required")
        value = self._typed(value, text, bad)
        if self.kind == "bool":
            return value
        if self.choices and value not in self.choices:
            bad(f"{excerpt(value)} is not one of {', '.join(map(str, self.choices))}")
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            bad(f"must be {'>' if self.open_low else '>='} {_number(self.low)}, got {_number(value)}")
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            bad(f"must be {'<' if self.open_high else '<='} {_number(self.high)}, got {_number(value)}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                bad(f"{excerpt(value)} {problem}")
        return value

    def _typed(self, value: Any, text: bool, bad: Callable[[str], None]) -> Any:
        """``value`` as the kind (a command-line string converted, a file's value as it is), or ``bad``."""
        kind = self.kind
        if kind == "bool":
            if not isinstance(value, bool):
                bad(f"{excerpt(value)} is not true or false")
            return value
        if kind in ("int", "float"):
            return _typed_number(kind, value, text, bad)
        if not isinstance(value, str):
            bad(f"{excerpt(value)} is not a string")
        if kind == "path" and not value.strip():
            bad("an empty path")
        return value


def _typed_number(kind: str, value: Any, text: bool, bad: Callable[[str], None]) -> int | float:
    what = "an integer" if kind == "int" else "a number"
    if text:
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            bad(f"{excerpt(value)} is not {what}")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind == "int" and not isinstance(value, int)):
        bad(f"{excerpt(value)} is not {what}")
    value = int(value) if kind == "int" else float(value)
    if kind == "float" and not math.isfinite(value):
        bad(f"{value} is not a finite number")
    return value


def _number(x) -> str:
    """A bound or a value in a message: whole numbers as integers (4294967295, not 4.29497e+09), short."""
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e16):
        return excerpt(int(x))
    return f"{x:g}"


@dataclass(frozen=True)
class Declared:
    """An option declared by a registry entry: its configuration ``name``, ``default``, :class:`Option`, and the
    keyword (``kwarg``) under which the entry's builder takes it."""

    name: str
    default: Any
    option: Option
    kwarg: str = ""

    def dataclass_field(self):
        """``(name, type, field)`` for ``dataclasses.make_dataclass``."""
        return self.name, type(self.default), field(default=self.default, metadata={"option": self.option})


def opt(default, kind: str | Option, help: str = "", **kw):
    """A dataclass field that declares an option (``engine.config``'s sections); ``kind`` may be a whole
    :class:`Option` declared elsewhere (one that module commands of a lower floor take too)."""
    option = kind if isinstance(kind, Option) else Option(kind, help, **kw)
    return field(default=default, metadata={"option": option})


# Options that the scripts (as training options of engine.config) and the module commands of datasets/
# (python -m datasets.folds, datasets.synthetic ...) both take: declared here, on the lowest floor, once.
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds
SEED = Option("int", "random seed", low=0, high=SEED_MAX)
DATA_DIR = Option("path", "dataset in Kaggle's layout", run_only=True, ensemble="--data-dir")
