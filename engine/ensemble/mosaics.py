"""The jigsaw of an ensemble run: the mosaics built once (RUN/mosaics, remade when the train or test set changed)
and, with ``mosaic_folds``, the mosaic-aware folds (RUN/folds.csv, remade when the mosaics or the train set
changed). Their records of inputs are RUN/mosaics/source.json and RUN/folds.csv.made-from.json
(:mod:`engine.ensemble.reuse`); a damaged record only means the file is made again."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.ensemble import steps
from engine.ensemble.options import EnsembleOptions
from engine.ensemble.reuse import DataDigests, file_digest, mark, reused


def prepare_mosaics(opts: EnsembleOptions, data: DataDigests) -> EnsembleOptions:
    """The options of a run that uses the mosaics (and the mosaic folds): they are made here when needed."""
    if not opts.mosaics:
        return opts
    lay = opts.layout
    step = steps.BuildMosaics(str(opts.data_dir), str(lay.mosaics))
    if opts.dry_run:
        steps.run_here(step, "mosaics", lay.log("mosaics"), dry=True)
    else:
        source = {"inputs": {"train": data.train, "test": data.test}, "options": {}}
        marker = lay.mosaics / "source.json"
        if not reused(marker, source, [lay.mosaics_csv], f"[mosaics] {lay.mosaics_csv} exists for this data, reused"):
            steps.run_here(step, "mosaics", lay.log("mosaics"))
            mark(marker, source)
    opts = replace(opts, mosaics_csv=str(lay.mosaics_csv))
    if not opts.mosaic_folds:
        return opts
    if not opts.dry_run:
        source = {"inputs": {"train": data.train, "mosaics": file_digest(lay.mosaics_csv)}, "options": {}}
        marker = lay.stamp_of(lay.folds_csv)
        if not reused(marker, source, [lay.folds_csv], f"[folds] {lay.folds_csv} was made from these mosaics, reused"):
            write_mosaic_folds(opts)
            mark(marker, source)
    return replace(opts, folds_file=str(lay.folds_csv))


def write_mosaic_folds(opts: EnsembleOptions) -> None:
    """RUN/folds.csv: every mosaic's train tiles in one fold (datasets.folds.mosaic_folds)."""
    from datasets import folds as F
    from datasets.kaggle import Layout, load_train, read_sample_submission
    from tgs.mosaic import Mosaics

    lay = opts.layout
    train = load_train(opts.data_dir)
    test = read_sample_submission(Layout.of(opts.data_dir).sample_submission)
    layout = Mosaics.read(lay.mosaics_csv, known_ids=np.concatenate([train.ids, test]))
    coverage = F.coverage_class(train.masks)
    folds = F.mosaic_folds(coverage, train.depths, F.mosaic_groups(train.ids, layout), F.CHUNKS, 0)
    F.write_folds(lay.folds_csv, train.ids, folds)
    crossing, total = F.crossing_pairs(train.ids, folds, layout)
    print(f"[folds] wrote {lay.folds_csv}: every mosaic's train tiles in one of {F.CHUNKS} folds "
          f"({crossing} of {total} train-train neighbour pairs across folds)")
