"""Command-line pieces every floor may use: a parser whose mistakes are one line (exit 2) and range-checked number
types. (The options several scripts share are in ``cli/common.py``.)"""
from __future__ import annotations

import argparse

from tgs.errors import UserError, excerpt

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds


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


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value
