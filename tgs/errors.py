"""User-facing errors: one clear line and exit code 2, never a traceback for a user mistake."""
from __future__ import annotations

import functools
import sys
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input (a path, a flag, a file's content). The message is shown as is."""


class DataError(UserError):
    """Missing or malformed data: the message names the file or id and what is wrong."""


def few(items, n: int = 5) -> str:
    """The first ``n`` of ``items`` for an error message: ``a, b, c ... (+7)``."""
    items = [str(x) for x in items]
    return ", ".join(items[:n]) + (f" ... (+{len(items) - n})" if len(items) > n else "")


def excerpt(value, limit: int = 40) -> str:
    """A short one-line repr of ``value`` for an error message, e.g. ``'12345678901234567890...' (20000 characters)``.

    At most ``limit`` characters of the repr's content are shown (escapes such as ``\\t`` count, so the excerpt
    stays short and on one line whatever the value holds); the total length is added when the value is cut.
    """
    if not isinstance(value, str):  # a number, a list: as Python writes it, unquoted
        text = repr(value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    text = str(value)  # a numpy string as a plain one
    head = text[:limit]
    shown = repr(head)
    while len(shown) > limit + 2:  # escapes (\t, \x00, \u2070 ...) make the repr longer than the characters
        head = head[:-1]
        shown = repr(head)
    if len(head) == len(text):
        return shown
    return f"{shown[:-1]}...{shown[-1]} ({len(text)} characters)"


def _path_problem(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a folder, where a file is expected"
    if isinstance(exc, NotADirectoryError):
        return "a part of this path is a file, where a folder is expected"
    if isinstance(exc, FileExistsError):
        return "exists and is not a folder (a folder is expected here)"
    return "permission denied"


def cli(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a script's ``main``: a UserError becomes ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return int(main(*args, **kwargs) or 0)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as exc:
            # a path that the user gave is of the wrong kind (a folder for a file, a file on the way to a folder)
            # or may not be written: one line naming it, whichever step met it
            print(f"error: {exc.filename or 'a path'}: {_path_problem(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # output piped into `head` and closed early
            sys.stderr.close()
            return 0

    return wrapper
