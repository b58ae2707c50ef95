"""Unpack the competition's zip into Kaggle's layout.

    python -m datasets.prepare tgs-salt-identification-challenge.zip --out DATA

``kaggle competitions download -c tgs-salt-identification-challenge`` saves one zip holding ``train.zip``,
``test.zip`` and the CSV files (and a few extras). ``train.zip`` holds ``images/`` and ``masks/``, ``test.zip``
holds ``images/``. Nested zips are opened in memory; members are written under DATA only (never outside it), and
unknown extras are skipped. A folder holding the downloaded files is accepted as well as the zip itself.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path, PurePosixPath

from tgs.errors import DataError, UserError, cli

CSV_FILES = ("train.csv", "depths.csv", "sample_submission.csv")
SPLITS = ("train", "test")


def _target(name: str, split: str | None) -> PurePosixPath | None:
    """Where an archive member goes inside DATA, or None to skip it."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or ".." in parts or parts[0].startswith("__MACOSX"):
        return None
    if len(parts) == 1 and parts[0] in CSV_FILES:
        return PurePosixPath(parts[0])
    # .../<split>/{images,masks}/<id>.png, or {images,masks}/<id>.png inside train.zip / test.zip
    for i, part in enumerate(parts[:-1]):
        if part in ("images", "masks") and parts[-1].endswith(".png") and i == len(parts) - 2:
            owner = parts[i - 1] if i >= 1 and parts[i - 1] in SPLITS else split
            if owner is None or (owner == "test" and part == "masks"):
                return None
            return PurePosixPath(owner, part, parts[-1])
    return None


def _unpack(archive: zipfile.ZipFile, out: Path, split: str | None, counts: dict) -> None:
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = PurePosixPath(info.filename).name
        if name.endswith(".zip"):
            stem = name[:-4]
            if stem in SPLITS or stem == "competition_data":
                with zipfile.ZipFile(io.BytesIO(archive.read(info))) as inner:
                    _unpack(inner, out, stem if stem in SPLITS else split, counts)
            continue
        target = _target(info.filename, split)
        if target is None:
            continue
        dest = out / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(archive.read(info))
        counts[str(target.parent)] = counts.get(str(target.parent), 0) + 1


def prepare(source: str | Path, out: str | Path) -> dict:
    source, out = Path(source), Path(out)
    counts: dict = {}
    if source.is_dir():
        for f in sorted(source.iterdir()):
            if f.suffix == ".zip":
                with zipfile.ZipFile(f) as z:
                    _unpack(z, out, f.stem if f.stem in SPLITS else None, counts)
            elif f.name in CSV_FILES:
                (out / f.name).parent.mkdir(parents=True, exist_ok=True)
                (out / f.name).write_bytes(f.read_bytes())
                counts["."] = counts.get(".", 0) + 1
    else:
        try:
            with zipfile.ZipFile(source) as z:
                _unpack(z, out, None, counts)
        except zipfile.BadZipFile:
            raise DataError(f"{source} is not a zip file") from None
    return counts


@cli
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="the competition zip, or a folder holding train.zip, test.zip and the CSVs")
    p.add_argument("--out", required=True, help="dataset folder to write (Kaggle's layout)")
    args = p.parse_args(argv)
    if not Path(args.source).exists():
        raise UserError(f"{args.source} does not exist")
    counts = prepare(args.source, args.out)
    from datasets.kaggle import Layout

    layout = Layout.of(args.out)
    layout.require("train_csv", "train_images", "train_masks", "test_images", "sample_submission")
    for k in sorted(counts):
        print(f"{k:14s} {counts[k]} files")
    print(f"unpacked into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
