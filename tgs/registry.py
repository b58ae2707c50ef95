"""Registries: every named thing (a loss, an input mode, a schedule, an optimiser, a mosaic rule, an executor, an
encoder alias) is registered once, with its builder, its one-line help and its properties; every flag choice, help
text, error message, generated document and shared test reads the registry.

The pattern is timm's ``@register_model`` / detectron2's ``Registry``::

    LOSSES = Registry("loss")

    @LOSSES.register("bce", help="pixel binary cross-entropy with logits")
    class BCE(Criterion): ...

    LOSSES.get("bcee")   # UserError: unknown loss 'bcee' (did you mean 'bce'?); valid losses: lovasz, ..., bce

A name is registered once: a second registration under the same name is a programming error (ValueError).
Properties (``**props``) are free-form keyword data the owner of the registry defines (a loss's options, a rule's
colour); :attr:`Entry.props` keeps them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from tgs.errors import UserError


@dataclass(frozen=True)
class Entry:
    """One registered thing: its ``name``, the ``obj`` that builds or is it, its one-line ``help``, ``props``."""

    name: str
    obj: Any
    help: str = ""
    props: dict = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:  # entry.colour reads props["colour"]
        props = self.__dict__.get("props", {})
        if key in props:
            return props[key]
        raise AttributeError(key)


class Registry:
    """Names -> :class:`Entry`, in registration order. ``kind`` names one entry in messages ("loss")."""

    def __init__(self, kind: str, plural: str | None = None, normalise: Callable[[str], str] | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._normalise = normalise or (lambda s: s)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, help: str = "", **props) -> Callable[[Any], Any]:
        """Decorator: register the decorated class or function under ``name``; returns it unchanged."""

        def add(obj: Any) -> Any:
            self.add(name, obj, help=help, **props)
            return obj

        return add

    def add(self, name: str, obj: Any, *, help: str = "", **props) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        entry = Entry(name, obj, help, dict(props))
        self._entries[name] = entry
        return entry

    # -- reading ---------------------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalise(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: str) -> str:
        """The registered spelling of ``name``, or a UserError naming the close match and every valid name."""
        key = self._normalise(str(name).strip())
        if key in self._entries:
            return key
        close = difflib.get_close_matches(key, list(self._entries), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown {self.kind} {str(name).strip()!r}{hint}; valid {self.plural}: {self.valid()}")

    def get(self, name: str) -> Entry:
        return self._entries[self.lookup(name)]

    def valid(self) -> str:
        return ", ".join(self._entries)

    def describe(self) -> list[str]:
        """``name: help`` lines, for help texts and generated documents."""
        return [f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values()]
