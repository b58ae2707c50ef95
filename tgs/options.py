"""How an option is declared: its kind, help, choices and range, in one place for every script and registry.

A training option is a field of one of ``engine.config``'s sections (``opt(default, kind, help, ...)``); an option
that belongs to one registered thing (a loss's weight, a schedule's period) is declared on that thing's registry
entry with the same :class:`Option`, and the configuration gathers it from there. ``engine.config.coerce`` checks
every value against its :class:`Option`, from a flag, a config file or a checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


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


def opt(default, kind: str, help: str, **kw):
    """A dataclass field that declares an option (``engine.config``'s sections)."""
    return field(default=default, metadata={"option": Option(kind, help, **kw)})
