"""Atomic file writes: a crash or a kill never leaves a half-written file under the final name."""
from __future__ import annotations

import contextlib
import errno
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space left, file too large (a size limit), quota
# what torch.save's C++ writer says when the underlying write fails (it gives no errno)
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


def disk_full(path, exc: BaseException) -> bool:
    """Whether ``exc``, raised while writing ``path``, means the disk (or a size limit or quota) is full."""
    if isinstance(exc, OSError) and exc.errno in FULL:
        return True
    if isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
        return True
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it over ``path``.

    On any failure the temporary file is removed and ``path`` keeps its previous content. A full disk (or a
    file-size limit, or a quota) while writing is a :class:`tgs.errors.UserError` naming ``path``."""
    from tgs.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder, where a file is expected")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if disk_full(path, exc):
            raise UserError(_full_message(path, exc)) from None
        raise
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if disk_full(path, exc):
            raise UserError(_full_message(path, exc)) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def require_file(path, where: str, kind: str = "file", missing: str = "does not exist",
                 folder: str | None = None) -> Path:
    """``path`` as a Path when it is a file; else one line: ``WHERE PATH is a folder, not a KIND`` (or ``folder``)
    or ``WHERE PATH MISSING``. ``where`` is the flag that gave it, with its trailing space ("--config ")."""
    from tgs.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{where}{path} {folder or f'is a folder, not a {kind}'}")
    if not path.is_file():
        raise UserError(f"{where}{path} {missing}")
    return path


CONFIG_BYTES = 1 << 20  # a configuration file (YAML, JSON) holds a few dozen keys: 1 MiB is far more than enough


def read_config_text(path: Path, where: str, most: int = CONFIG_BYTES) -> str:
    """The text of a small configuration file, refused with one line (``WHERE PATH is N bytes ...``) before it is
    read when it is larger than ``most`` bytes: a config is read whole and parsed, so its size bounds the work."""
    from tgs.errors import UserError

    size = path.stat().st_size
    if size > most:
        raise UserError(f"{where}{path} is {size} bytes, more than a configuration file can need ({most}); refused")
    return path.read_text()


DATASET_FILES = ("train.csv", "depths.csv", "sample_submission.csv")  # Kaggle's layout: its files ...
DATASET_FOLDERS = ("train", "test")  # ... and its folders, with everything inside them
DATASET_ENTRIES = DATASET_FILES + DATASET_FOLDERS
_DATASET_MARKS = ("train/images", "train/masks", "test/images")  # folders that make a folder a dataset


def _spellings(path) -> list[Path]:
    """``path`` as written (absolute, ``..`` folded) and with every symlink resolved: the two ways to reach it."""
    lexical = Path(os.path.abspath(os.path.expanduser(path)))
    real = Path(os.path.realpath(lexical))
    return [lexical] if real == lexical else [lexical, real]


def _same_or_inside(out: Path, src: Path) -> bool:
    """Whether ``out`` is ``src`` or lies inside the folder ``src`` (both resolved), or is the same file (a hard
    link)."""
    if out == src or src in out.parents:
        return True
    try:
        return out.exists() and src.exists() and os.path.samefile(out, src)
    except OSError:
        return False


def is_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a dataset in Kaggle's layout: it holds one of its CSV files, or train/images,
    train/masks or test/images."""
    return (any((folder / f).is_file() for f in DATASET_FILES)
            or any((folder / d).is_dir() for d in _DATASET_MARKS))


def dataset_entry(path, data_dirs: Sequence = ()) -> tuple[Path, str] | None:
    """``(dataset folder, entry)`` when ``path`` is one of a dataset's entries (train.csv, depths.csv,
    sample_submission.csv) or lies inside its train/ or test/ folder, however it is reached: through a symlink to
    the dataset, to one of its folders or to the file itself, or by ``..``. The datasets are ``data_dirs`` and any
    folder above ``path`` (either spelling) that :func:`is_dataset`; None otherwise."""
    outs = _spellings(path)
    roots = {Path(os.path.realpath(d)) for d in data_dirs if d is not None}
    for out in outs:
        for folder in out.parents:
            if folder in roots or is_dataset(folder):
                entry = out.relative_to(folder).parts[0]
                if entry in DATASET_ENTRIES:
                    return folder, entry
    for root in roots:  # an entry that is itself a symlink (DATA/train -> /disk/train): compare its target
        for entry in DATASET_ENTRIES:
            target = Path(os.path.realpath(root / entry))
            if any(_same_or_inside(out, target) for out in outs):
                return root, entry
    return None


def _each(inputs: dict | None) -> Iterator[tuple[str, str | os.PathLike]]:
    """``(flag, path)`` for every path of ``{flag: path, paths or None}``."""
    for where, given in (inputs or {}).items():
        for one in ([given] if isinstance(given, (str, os.PathLike)) else list(given or [])):
            if one is not None:
                yield where, one


def input_hit(path, inputs: dict | None) -> tuple[str, str] | None:
    """``(flag, given path)`` of the first of ``inputs`` (``{flag: path or paths}``) that ``path`` is, or lies
    inside (an input folder), compared with symlinks resolved; None when none."""
    outs = _spellings(path)
    for where, one in _each(inputs):
        if any(_same_or_inside(out, src) for out in outs for src in _spellings(one)):
            return where, str(one)
    return None


def check_output(path, flag: str, inputs: dict | None = None, data_dirs: Sequence = (),
                 contains_inputs: bool = False) -> None:
    """The one check that an output never replaces an input: refuse, with one line and before any work, an
    output ``path`` (given as ``flag``) that is one of the step's ``inputs`` (``{flag: path or paths}``) or lies
    in an input folder, or that is an entry of a dataset in Kaggle's layout (:func:`dataset_entry`: ``data_dirs``,
    and any dataset folder above the path). Paths are compared with symlinks resolved, and as written.
    ``contains_inputs``: the output is a folder that is replaced whole, so an input inside it is refused too."""
    from tgs.errors import UserError

    if path is None:
        return
    hit = input_hit(path, inputs)
    if hit is not None:
        raise UserError(f"{flag} {path} would overwrite the input {hit[0]} {hit[1]}: write it elsewhere")
    if contains_inputs:
        for where, one in _each(inputs):
            if input_hit(one, {flag: path}) is not None:
                raise UserError(f"{flag} {path} would remove the input {where} {one}, which lies inside it: move "
                                "it out first, or write elsewhere")
    found = dataset_entry(path, data_dirs)
    if found is not None:
        root, entry = found
        raise UserError(f"{flag} {path} would overwrite the dataset's {entry} in {root}: write it elsewhere")


class FolderLock:
    """An exclusive ``flock`` on ``FOLDER/.lock`` while one process works in FOLDER.

    A second process that asks for the same folder gets one line (which process holds it) instead of writing
    beside the first (mixed checkpoints, or its stale-temporary clean-up removing the other's files). The lock
    belongs to the open file, so a killed process frees it at once; the small file stays.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, what: str):
        import fcntl

        from tgs.errors import UserError

        self._fd = None
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.folder / self.NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            self._fd = None
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(f"{what} {self.folder} is in use by another process{pid}; wait for it to end, or use "
                            "another folder") from None
        except OSError as exc:  # a filesystem without locks (some network mounts): work on, unguarded
            import sys

            print(f"note: {what} {self.folder}: no lock on this filesystem ({exc.strerror}); make sure no other "
                  "process works in it", file=sys.stderr)
            return
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike, replace_also: Sequence[str | os.PathLike] = ()) -> Iterator[list[Path]]:
    """Temporary paths for files written as a set. Only when every one is complete (fsynced) are the old versions
    of ``paths`` and of ``replace_also`` (files of the same set not written this time) removed and the new ones
    renamed into place: a failure while writing (a full disk) leaves the old set intact, and a kill while
    committing leaves some new files and some missing, never a new file beside an old one."""
    from tgs.errors import UserError

    paths = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for old in [*paths, *map(Path, replace_also)]:
            if old.exists():
                old.unlink()
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        bad = next((p for p in paths if disk_full(p, exc)), None)
        if bad is not None:
            raise UserError(_full_message(bad, exc)) from None
        raise
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()


def _full_message(path: Path, exc: BaseException) -> str:
    what = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else "the write failed"
    previous = "its previous version is intact" if path.exists() else "nothing was written under that name"
    return f"cannot write {path}: the disk is full or a size limit was reached ({what}); {previous}"


def remove_stale_temporaries(folder: str | os.PathLike, names=None) -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` leaves when its process is killed (``.NAME.*.tmp``)
    in ``folder``, for the target file names ``names`` (default: all). Returns those removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]
    removed = []
    for pattern in patterns:
        for p in folder.glob(pattern):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


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


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member, or an empty zip
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` member of an archive says it holds (read from its header, nothing decompressed)."""

    shape: tuple
    dtype: object  # numpy.dtype (numpy is imported only where an archive is read)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


MAX_TILES = 2_000_000  # tiles of one data set at most: datasets.synthetic makes up to 1,000,000 train and test each
MAX_CHARS = 4096  # characters of one string of a saved file (an id, a model's path, a provenance record)


def check_strings(path, name: str, declared: "NpyHeader", ndim: int, most: int = MAX_TILES) -> int:
    """A declared string array (``ndim`` 1) or string (0): the right kind, at most ``most`` strings of at most
    :data:`MAX_CHARS` characters; returns how many. A DataError naming the file and the array otherwise."""
    from tgs.errors import DataError

    if len(declared.shape) != ndim or declared.dtype.kind != "U":
        kind = "a 1-D array of strings" if ndim else "a string"
        raise DataError(f"{path}: {name!r} must be {kind}, got {declared.dtype} {declared.shape}")
    count, chars = math.prod(declared.shape), declared.dtype.itemsize // 4
    if count > most or chars > MAX_CHARS:
        raise DataError(f"{path}: {name!r} declares {count} strings of {chars} characters, more than the data can "
                        f"need (at most {most} of {MAX_CHARS}); refused before reading it")
    return count


def npz_declared(path: Path, names: Sequence[str], what: str) -> dict[str, NpyHeader]:
    """The declared shape and dtype of the arrays ``names`` of the ``.npz`` ``path``, from each member's ``.npy``
    header alone; a member whose size in the archive's directory disagrees with its header (a lie that would make
    numpy allocate the header's size first), an object array (a pickle), a missing array or a damaged header is
    a DataError naming the file."""
    import numpy as np

    from tgs.errors import DataError

    out = {}
    with zipfile.ZipFile(path) as z:
        for name in names:
            try:
                info = z.getinfo(f"{name}.npy")
            except KeyError:
                raise DataError(f"{path} is not a {what} (no {name!r} array)") from None
            with z.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                header = fh.tell()
            if dtype.hasobject:
                raise DataError(f"{path} holds an object array (pickled data), refused: {what}s hold plain arrays "
                                "only")
            out[name] = NpyHeader(tuple(shape), dtype)
            if info.file_size != header + out[name].nbytes:
                raise DataError(f"{path} is not a readable .npz {what}: corrupt ({name!r} declares {dtype} "
                                f"{tuple(shape)} but its member holds {info.file_size} bytes)")
    return out


def read_npz(path: str | os.PathLike, names: Sequence[str], what: str,
             check: Callable[[dict[str, NpyHeader]], None] | None = None) -> dict:
    """The arrays ``names`` of the ``.npz`` file ``path``, read without pickle (``allow_pickle=False``).

    Nothing is decompressed before every member's declared shape and dtype (:func:`npz_declared`) passed
    ``check``, which raises a DataError for shapes the caller's data cannot need (an archive of a few MB may
    declare gigabytes): memory is bounded by what ``check`` accepts. A file that is not a readable ``.npz``
    holding them all (a single ``.npy``, not a zip, truncated or corrupt, an object array, a missing array) is a
    DataError naming the file as a ``what`` (e.g. "probabilities file")."""
    import numpy as np

    from tgs.errors import DataError

    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise DataError(f"{path} is a single .npy array, not a .npz {what}")
    if not head.startswith(_ZIP_MAGIC):
        raise DataError(f"{path} is not a readable .npz {what} (not a zip archive)")
    try:
        declared = npz_declared(path, names, what)
        if check is not None:
            check(declared)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in names}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{path} holds an object array (pickled data), refused: {what}s hold plain arrays "
                            "only") from None
        raise DataError(f"{path} is not a readable .npz {what}: corrupt or truncated ({_first_line(exc)})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npz {what}: corrupt or truncated ({_first_line(exc)})") from None


def _first_line(exc: Exception, n: int = 100) -> str:
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= n else text[:n] + "..."
