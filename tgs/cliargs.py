"""Command-line pieces every floor may use: a parser whose mistakes are one line (exit 2), range-checked number
types, and a flag made from its declaration (:func:`add_declared`), so that a module command of a low floor
(``python -m datasets.folds``) and the scripts take a shared flag from one declaration. (The options the scripts
share are in ``cli/common.py``.)"""
from __future__ import annotations

import argparse
import math

from tgs.errors import UserError, excerpt
from tgs.io import require_file


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors raised as :class:`~tgs.errors.UserError`: ``error: PROG: MESSAGE``, one line,
    exit 2 (argparse's own would print the usage first)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def integer(low: int | None = None, high: int | None = None):
    """An argparse type: an integer >= ``low`` and <= ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{excerpt(text)} is not an integer") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {excerpt(value)}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {excerpt(value)}")
        return value

    return parse


def number(low: float | None = None, high: float | None = None, open_low: bool = False, open_high: bool = False):
    """An argparse type: a finite number within ``low`` .. ``high`` (inclusive unless ``open_low``/``open_high``);
    a value outside is said with the range as ``[0, 1)`` or ``(0, 16]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        below = low is not None and (value < low or (open_low and value == low))
        above = high is not None and (value > high or (open_high and value == high))
        if below or above:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{low:g}, {high:g}{right}, got {value:g}")
        return value

    return parse


share = number(0.0, 1.0)  # [0, 1]: a share of pixels or images


MOSAICS_HELP = "mosaics.csv of mosaic.py"
MOSAICS_MISSING = "does not exist (python mosaic.py --data-dir DATA --out DIR writes DIR/mosaics.csv)"


def mosaics_csv(text: str) -> str:
    """The argparse type of ``--mosaics``: an existing file (its contents are read, and checked against the data,
    by the script). A missing one is one line naming the flag and how to make it, raised as it is (not argparse's
    ``argument --mosaics:`` form) so that every script says it alike."""
    if not text.strip():
        raise UserError("--mosaics: an empty path; give a mosaics.csv of mosaic.py")
    require_file(text, "--mosaics ", "mosaics.csv", missing=MOSAICS_MISSING)
    return text


def add_mosaics(p, note: str, **kw) -> argparse.Action:
    """``--mosaics CSV``, declared once for every script that reads mosaic.py's layout: its type
    (:func:`mosaics_csv`), metavar and help; ``note`` says what the script does with it."""
    return p.add_argument("--mosaics", type=mosaics_csv, metavar="CSV", help=f"{MOSAICS_HELP}: {note}", **kw)


def checked(name: str, option, flag: str):
    """An argparse type for the option ``name`` declared by ``option`` (:class:`tgs.options.Option`) and given as
    ``flag``: the same :meth:`~tgs.options.Option.coerce` checks (kind, choices, range, the option's own test) that
    a config file's key or a post-config file's value pass."""

    def parse(text: str):
        try:
            return option.coerce(text, flag, text=True)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def add_declared(p, flag: str, option, default=None, note: str | None = None, **kw) -> argparse.Action:
    """Add ``flag`` to ``p`` from its declaration ``option`` (:class:`tgs.options.Option`): the type that checks
    it, the metavar and the help are the declaration's, so every script that takes the flag takes the same thing
    (tests/test_one_place.py compares them). ``note``: the script's own use, after the declared help; ``default``
    is shown unless it is None (the note then says what stands in) or the flag is required."""
    text = f"{option.help}; {note}" if note else option.help
    name = flag[2:].replace("-", "_")
    if option.kind == "bool":
        action = p.add_argument(flag, action="store_true", help=text, **kw)
    else:
        metavar = "{" + ",".join(map(str, option.choices)) + "}" if option.choices else name.upper()
        shown = "" if default is None or kw.get("required") else f" (default: {default})"
        action = p.add_argument(flag, type=checked(name, option, flag), metavar=metavar, default=default,
                                help=text + shown, **kw)
    action.declared = option  # the flag is this declaration's (tests/test_one_place.py checks it)
    return action
