"""The jigsaw of an ensemble run: the mosaics, built once (RUN/mosaics, remade when the train or test set changed)
or given (``--mosaics CSV``, used as it is), and, with ``mosaic_folds``, the mosaic-aware folds (RUN/folds.csv,
remade when the mosaics' contents or the train set changed). Their records of inputs are RUN/mosaics/source.json
and RUN/folds.csv.made-from.json (:mod:`engine.ensemble.reuse`); a damaged record only means the file is made
again. Every later output records the mosaics.csv's contents digest, built or given."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from engine.ensemble import steps
from engine.ensemble.options import EnsembleOptions
from engine.ensemble.reuse import DataDigests, file_digest, mark, reused
from tgs.errors import UserError


def prepare_mosaics(opts: EnsembleOptions, data: DataDigests) -> EnsembleOptions:
    """The options of a run that uses the mosaics (and the mosaic folds): a given mosaics.csv is checked against
    the data, else the mosaics are built here when needed; the mosaic folds are made from them."""
    if not opts.mosaics:
        return opts
    if opts.mosaics_csv is not None:
        check_given(opts)
    else:
        opts = replace(opts, mosaics_csv=str(build(opts, data)))
    if not opts.mosaic_folds:
        return opts
    lay = opts.layout
    if not opts.dry_run:
        source = {"inputs": {"train": data.train, "mosaics": file_digest(opts.mosaics_csv)}, "options": {}}
        marker = lay.stamp_of(lay.folds_csv)
        if not reused(marker, source, [lay.folds_csv], f"[folds] {lay.folds_csv} was made from these mosaics, reused"):
            write_mosaic_folds(opts)
            mark(marker, source)
    return replace(opts, folds_file=str(lay.folds_csv))


def build(opts: EnsembleOptions, data: DataDigests) -> Path:
    """RUN/mosaics/mosaics.csv, built by mosaic.py's step unless it was built from the same train and test sets."""
    lay = opts.layout
    step = steps.BuildMosaics(str(opts.data_dir), str(lay.mosaics))
    if opts.dry_run:
        steps.run_here(step, "mosaics", lay.log("mosaics"), dry=True)
        return lay.mosaics_csv
    source = {"inputs": {"train": data.train, "test": data.test}, "options": {}}
    marker = lay.mosaics / "source.json"
    if not reused(marker, source, [lay.mosaics_csv], f"[mosaics] {lay.mosaics_csv} exists for this data, reused"):
        steps.run_here(step, "mosaics", lay.log("mosaics"))
        mark(marker, source)
    return lay.mosaics_csv


def check_given(opts: EnsembleOptions) -> None:
    """A given mosaics.csv must be a valid layout of this data set's train and test tiles (one line naming the
    file otherwise), before any fold trains; what is made from it records its contents' digest."""
    from datasets.kaggle import Layout, read_sample_submission, read_train_csv
    from tgs.mosaic import Mosaics

    data = Layout.of(opts.data_dir)
    known = np.concatenate([read_train_csv(data.train_csv)["id"].to_numpy(str),
                            read_sample_submission(data.sample_submission)])
    try:
        layout = Mosaics.read(opts.mosaics_csv, known_ids=known)
    except UserError as exc:
        raise UserError(f"--mosaics {exc}") from None
    print(f"[mosaics] {opts.mosaics_csv}: {len(layout)} tiles in {layout.sizes().size} mosaics, used as given")


def write_mosaic_folds(opts: EnsembleOptions) -> None:
    """RUN/folds.csv: every mosaic's train tiles, and the likely neighbours among them, in one fold
    (datasets.folds.neighbour_folds)."""
    from datasets import folds as F
    from datasets.kaggle import Layout, load_train, read_sample_submission
    from tgs.mosaic import Mosaics

    lay = opts.layout
    train = load_train(opts.data_dir)
    test = read_sample_submission(Layout.of(opts.data_dir).sample_submission)
    layout = Mosaics.read(opts.mosaics_csv, known_ids=np.concatenate([train.ids, test]))
    folds = F.neighbour_folds(train, layout, F.CHUNKS)
    F.write_folds(lay.folds_csv, train.ids, folds)
    crossing, total = F.crossing_pairs(train.ids, folds, layout)
    print(f"[folds] wrote {lay.folds_csv}: every mosaic's train tiles and likely neighbours in one of {F.CHUNKS} "
          f"folds ({crossing} of {total} train-train neighbour pairs across folds)")
