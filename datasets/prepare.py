"""Unpack the competition's zip into Kaggle's layout.

    python -m datasets.prepare tgs-salt-identification-challenge.zip --out DATA [--force]

``kaggle competitions download -c tgs-salt-identification-challenge`` saves one zip holding ``train.zip``,
``test.zip`` and the CSV files (and a few extras). ``train.zip`` holds ``images/`` and ``masks/``, ``test.zip``
holds ``images/``. A folder holding the downloaded files is accepted as well as the zip itself.

What it refuses (one line, exit code 2) and why it is safe:

- Members are written under DATA only (never outside it); unknown extras are skipped without being read.
- Sizes are bounded by what the competition's files can be (:class:`Limits`: 22000 small 101x101 PNGs of a few
  KB, three CSVs of a few MB, a test.zip of about 160 MB): checked from the zip headers first, and enforced
  while reading (headers can lie), so a zip bomb stops at the bound. Nested zips are copied, bounded, into a
  temporary file and opened from there, never read whole into memory.
- A corrupt or truncated member (bad CRC, broken compressed data) is named with its archive.
- Nothing half-made: everything is unpacked into a temporary folder beside DATA, which is moved into place only
  once all members were written and the layout is complete. On any failure (bad member, corrupt archive,
  Ctrl-C, a full disk) the temporary folder is removed and DATA is as it was.
- An existing DATA: an empty folder is replaced; a non-empty one is refused unless ``--force``, which replaces
  it only at the very end, after everything succeeded. A file or a symbolic link there is refused.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from tgs.errors import DataError, UserError, cli, excerpt

CSV_FILES = ("train.csv", "depths.csv", "sample_submission.csv")
SPLITS = ("train", "test")
NESTED = SPLITS + ("competition_data",)  # stems of the nested zips that are opened; other zips are skipped
REQUIRED = ("train_csv", "train_images", "train_masks", "test_images", "sample_submission")  # Layout parts
_PNG_NAME = re.compile(r"\w[\w.-]*\.png")  # a plain file name (the competition's ids are 10 hex digits)
_CHUNK = 1 << 20  # bytes per read while copying a member
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limits:
    """Bounds on what the archive may unpack to. Each is far above what the competition's files are (PNGs of
    about 10 KB, CSVs of at most a few MB, train.zip about 40 MB, test.zip about 160 MB, about 250 MB in all)
    and far below what would fill a disk or memory."""

    png: int = 1 * MiB  # a 101x101 16-bit RGBA PNG is 80 KB raw; 1 MiB leaves room for any honest metadata
    csv: int = 64 * MiB  # train.csv is about 2 MB
    nested_zip: int = 1 * GiB  # test.zip is about 160 MB
    total: int = 2 * GiB  # all members written, nested zips' temporary copies excluded
    members: int = 100_000  # entries per archive (test.zip has 18000)
    depth: int = 2  # zips within zips: the outer zip > competition_data.zip > train.zip

    def bound(self, kind: str) -> int:
        return {"png": self.png, "csv": self.csv, "zip": self.nested_zip}[kind]


LIMITS = Limits()


def _size(n: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= unit:
            return f"{n / unit:.4g} {name}"
    return f"{n} bytes"


def _target(name: str, split: str | None) -> PurePosixPath | None:
    """Where an archive member goes inside DATA, or None to skip it. Built from checked parts only: a split
    name, ``images``/``masks``, a plain PNG name, or one of the CSV names, so never outside DATA."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts or parts[0].startswith("__MACOSX"):
        return None
    if len(parts) == 1 and parts[0] in CSV_FILES:
        return PurePosixPath(parts[0])
    # .../<split>/{images,masks}/<id>.png, or {images,masks}/<id>.png inside train.zip / test.zip
    if len(parts) >= 2 and parts[-2] in ("images", "masks") and _PNG_NAME.fullmatch(parts[-1]):
        kind = parts[-2]
        owner = parts[-3] if len(parts) >= 3 and parts[-3] in SPLITS else split
        if owner is None or (owner == "test" and kind == "masks"):
            return None
        return PurePosixPath(owner, kind, parts[-1])
    return None


class TooBig(Exception):
    """More bytes came than the bound allowed."""


class _Unreadable(Exception):
    """The source could not be read (corrupt or truncated data); args[0] is the cause."""


def copy_bounded(src: IO[bytes], dest: Path, limit: int) -> int:
    """Copy ``src`` into the new file ``dest`` in chunks; the number of bytes copied. Raises TooBig as soon as
    more than ``limit`` bytes come (whatever a header said), _Unreadable when reading fails; write errors
    (a full disk) propagate as OSError."""
    written = 0
    with open(dest, "xb") as out:
        while True:
            try:
                chunk = src.read(min(_CHUNK, limit - written + 1))
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise _Unreadable(exc) from None
            if not chunk:
                return written
            written += len(chunk)
            if written > limit:
                raise TooBig()
            out.write(chunk)


def _open_zip(path: Path, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise DataError(f"{label} is not a zip file, or it is truncated ({exc})") from None
    except OSError as exc:
        raise UserError(f"cannot read {label}: {exc.strerror or exc}") from None


@dataclass
class _Member:
    info: zipfile.ZipInfo
    kind: str  # "png", "csv" or "zip"
    target: PurePosixPath | None  # inside DATA (None for a nested zip)


@dataclass
class _Unpacker:
    """Writes members into ``root`` (the temporary folder); messages name ``shown`` (the final DATA) instead."""

    root: Path
    shown: Path
    limits: Limits
    counts: dict = field(default_factory=dict)
    written: int = 0
    _temps: int = 0

    def _plan(self, archive: zipfile.ZipFile, label: str, split: str | None) -> list[_Member]:
        """The members to unpack, their sizes checked from the headers (before anything is read)."""
        infos = archive.infolist()
        if len(infos) > self.limits.members:
            raise DataError(f"{label} has {len(infos)} members, over the bound of {self.limits.members} "
                            "(the competition's largest archive has 18000)")
        plan, claimed = [], self.written
        for info in infos:
            if info.is_dir():
                continue
            name = PurePosixPath(info.filename).name
            if name.endswith(".zip"):
                if name[:-4] not in NESTED:
                    continue
                member = _Member(info, "zip", None)
            else:
                target = _target(info.filename, split)
                if target is None:
                    continue
                member = _Member(info, "csv" if target.suffix == ".csv" else "png", target)
                claimed += info.file_size
            bound = self.limits.bound(member.kind)
            if info.file_size > bound:
                raise DataError(f"{label}: member {excerpt(info.filename)} says it is {info.file_size} bytes, "
                                f"over the bound of {_size(bound)} for a {member.kind.upper()}")
            if claimed > self.limits.total:
                raise DataError(f"{label}: its members add up to more than {_size(self.limits.total)}, the bound "
                                f"for the whole dataset (at member {excerpt(info.filename)})")
            plan.append(member)
        return plan

    def _copy(self, archive: zipfile.ZipFile, label: str, member: _Member, dest: Path, shown: str,
              counted: bool) -> None:
        """Copy one member to ``dest``, enforcing its bound (and the total when ``counted``) while reading."""
        bound = self.limits.bound(member.kind)
        limit = min(bound, self.limits.total - self.written) if counted else bound
        name = excerpt(member.info.filename)
        try:
            with archive.open(member.info) as src:
                n = copy_bounded(src, dest, limit)
        except TooBig:
            if limit < bound:
                raise DataError(f"{label}: member {name} takes the unpacked dataset past {_size(self.limits.total)}, "
                                "the bound for the whole dataset") from None
            raise DataError(f"{label}: member {name} expands past {_size(bound)}, the bound for a "
                            f"{member.kind.upper()} (its header said {member.info.file_size} bytes)") from None
        except (_Unreadable, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            cause = exc.args[0] if isinstance(exc, _Unreadable) else exc
            raise DataError(f"{label}: member {name} is corrupt or truncated ({cause})") from None
        except (RuntimeError, NotImplementedError) as exc:  # encrypted, or an unsupported compression method
            raise DataError(f"{label}: member {name} cannot be read ({exc})") from None
        except OSError as exc:
            raise DataError(f"cannot write {shown}: {exc.strerror or exc}; nothing was unpacked") from None
        if counted:
            self.written += n

    def unpack(self, archive: zipfile.ZipFile, label: str, split: str | None, depth: int = 0) -> None:
        for member in self._plan(archive, label, split):
            if member.kind == "zip":
                self._nested(archive, label, member, split, depth)
                continue
            dest = self.root / member.target
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(f"cannot create {self.shown / member.target.parent}: {exc.strerror or exc}") from None
            self._copy(archive, label, member, dest, str(self.shown / member.target), counted=True)
            key = str(member.target.parent)
            self.counts[key] = self.counts.get(key, 0) + 1

    def _nested(self, archive: zipfile.ZipFile, label: str, member: _Member, split: str | None,
                depth: int) -> None:
        """Open a nested zip from a bounded temporary copy inside the temporary folder, then remove the copy."""
        inner_label = f"{label}:{member.info.filename}"
        if depth >= self.limits.depth:
            raise DataError(f"{inner_label}: zips nested more than {self.limits.depth} deep")
        self._temps += 1
        tmp = self.root / f".nested-{self._temps}.zip"
        try:
            self._copy(archive, label, member, tmp, f"a temporary copy of {inner_label} in {self.shown.parent}",
                       counted=False)
            stem = PurePosixPath(member.info.filename).name[:-4]
            with _open_zip(tmp, inner_label) as inner:
                self.unpack(inner, inner_label, stem if stem in SPLITS else split, depth + 1)
        finally:
            tmp.unlink(missing_ok=True)

    def copy_csv(self, path: Path) -> None:
        """A CSV file of a folder of downloads, bounded as an archive member is."""
        try:
            with open(path, "rb") as src:
                self.written += copy_bounded(src, self.root / path.name, self.limits.csv)
        except TooBig:
            raise DataError(f"{path} is larger than {_size(self.limits.csv)}, the bound for a CSV") from None
        except _Unreadable as exc:
            raise DataError(f"cannot read {path}: {exc.args[0]}") from None
        except OSError as exc:
            raise DataError(f"cannot write {self.shown / path.name}: {exc.strerror or exc}; "
                            "nothing was unpacked") from None
        self.counts["."] = self.counts.get(".", 0) + 1

    def check_layout(self, source: Path) -> None:
        from datasets.kaggle import Layout

        layout = Layout.of(self.root)
        for part in REQUIRED:
            path = getattr(layout, part)
            if not path.exists():
                raise DataError(f"{source} holds no {path.relative_to(self.root).as_posix()}: not the "
                                "competition's archive (train.zip, test.zip, train.csv, sample_submission.csv)")


def _check_out(out: Path, force: bool) -> None:
    """Refuse an --out that is a file, a link, or (without ``force``) a non-empty folder."""
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; give the folder itself")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not force and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; give --force to replace it (only once unpacking succeeded)")


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors; those created, innermost first (to remove on failure)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from None
    return missing


def _fresh_folder(beside: Path, suffix: str) -> Path:
    """A new hidden folder next to ``beside`` (same file system, so it can be renamed into place); created
    with the usual permissions (``mkdtemp`` would make it private)."""
    folder = beside.parent / f".{beside.name}.{uuid.uuid4().hex[:12]}.{suffix}"
    folder.mkdir()
    return folder


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` to ``out`` (a rename replaces an empty folder); a non-empty ``out`` is
    set aside first, put back if the rename fails, and removed once it succeeded."""
    if not out.exists() or not any(out.iterdir()):
        os.rename(staging, out)
        return
    aside = _fresh_folder(out, "old")
    os.rename(out, aside / out.name)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(aside / out.name, out)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def prepare(source: str | os.PathLike, out: str | os.PathLike, force: bool = False,
            limits: Limits = LIMITS) -> dict:
    """Unpack ``source`` (the competition zip, or a folder of its downloads) into ``out``; the number of files
    written per folder (``"."`` for the CSVs). All or nothing: see the module's docstring."""
    source, out = Path(source), Path(out)
    _check_out(out, force)
    created = _make_parents(out.parent)
    try:
        staging = _fresh_folder(out, "partial")
    except OSError as exc:
        _remove_empty(created)
        raise UserError(f"cannot create a folder in {out.parent}: {exc.strerror or exc}") from None
    try:
        job = _Unpacker(staging, out, limits)
        if source.is_dir():
            for f in sorted(source.iterdir()):
                if f.suffix == ".zip":
                    with _open_zip(f, str(f)) as z:
                        job.unpack(z, str(f), f.stem if f.stem in SPLITS else None)
                elif f.name in CSV_FILES:
                    job.copy_csv(f)
        else:
            with _open_zip(source, str(source)) as z:
                job.unpack(z, str(source), None)
        job.check_layout(source)
        try:
            _move_into_place(staging, out)
        except OSError as exc:
            raise UserError(f"cannot move the unpacked files into {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    return job.counts


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def build_parser():
    """The parser of ``python -m datasets.prepare``."""
    from tgs.cliargs import ArgumentParser

    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="the competition zip, or a folder holding train.zip, test.zip and the CSVs")
    p.add_argument("--out", required=True, help="dataset folder to write (Kaggle's layout); must not exist, or be "
                                                "empty, unless --force")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out (only at the end, once everything was unpacked)")
    return p


@cli
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.source).exists():
        raise UserError(f"{args.source} does not exist")
    from tgs.io import check_output

    check_output(args.out, "--out", {"SOURCE": args.source}, contains_inputs=True)
    counts = prepare(args.source, args.out, force=args.force)
    for k in sorted(counts):
        print(f"{k:14s} {counts[k]} files")
    print(f"unpacked into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
