"""Atomic file writes: a crash or a kill never leaves a half-written file under the final name."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Sequence


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` for writing that only replaces ``path`` once the block finished without an exception."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def read_csv_strings(path: str | os.PathLike, columns: Sequence[str], missing: str = "does not exist"):
    """A CSV read as strings (empty fields stay empty, never NaN) whose header must be exactly ``columns``.

    A missing file, an unreadable one or a wrong header is a DataError naming the file; ``missing`` ends the
    missing-file message (e.g. a hint on the expected layout).
    """
    import pandas as pd

    from tgs.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} {missing}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if list(df.columns) != list(columns):
        raise DataError(f"{path}: header is {','.join(map(str, df.columns))!r}, expected {','.join(columns)!r}")
    return df
