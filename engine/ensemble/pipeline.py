"""The whole ensemble run: the mosaics (when asked), then per self-training round the folds (trained as jobs),
the round's outputs and the next round's pseudo-labels, and the summary; one ensemble.py per run folder."""
from __future__ import annotations

from engine.ensemble.mosaics import prepare_mosaics
from engine.ensemble.naming import jobs_of
from engine.ensemble.options import EnsembleOptions
from engine.ensemble.outputs import ensemble_outputs
from engine.ensemble.reuse import DataDigests
from engine.ensemble.rounds import next_labels, round_options
from engine.ensemble.summary import oof_score, summary_lines
from engine.ensemble.training import run_folds
from engine.jobs import check_executor
from tgs.io import FolderLock


def run(opts: EnsembleOptions) -> int:
    """The whole ensemble (see the package docstring)."""
    from datasets.kaggle import Layout

    Layout.of(opts.data_dir).require("train_csv", "train_images", "train_masks", "sample_submission", "test_images")
    print(f"ensemble of {len(jobs_of(opts))} models: modes {','.join(opts.modes)} x folds {','.join(opts.folds)} "
          f"in {opts.run_dir}")
    if not opts.dry_run:
        check_executor(opts.executor)  # e.g. no srun: said before anything is touched
    lock = None if opts.dry_run else FolderLock(opts.run_dir, "--run-dir")  # one ensemble.py per run folder
    try:
        return rounds(opts)
    finally:
        if lock is not None:
            lock.release()


def rounds(opts: EnsembleOptions) -> int:
    data = DataDigests(str(opts.data_dir))  # each digest computed once, when first needed
    opts = prepare_mosaics(opts, data)
    labels, scores = None, []
    for r in range(opts.pseudo_rounds + 1):
        ropts = round_options(opts, r, labels)
        if opts.pseudo_rounds:
            print(f"== round {r} of {opts.pseudo_rounds}" + (f": pseudo-labels {ropts.pseudo_labels}" if r else ""))
        jobs = jobs_of(ropts)
        run_folds(jobs, ropts, data)
        out = ensemble_outputs(jobs, ropts, data)
        if not opts.dry_run:
            print(f"out-of-fold predictions: {out['oof']}")
            print(f"submission: {out['submission']} (probabilities: {out['probabilities']})")
            if opts.pseudo_rounds:
                scores.append((r, oof_score(ropts), out["submission"]))
        if r < opts.pseudo_rounds:
            labels = next_labels(jobs, ropts, data)
    if scores:
        print("\n".join(summary_lines(scores, opts.pseudo_source)))
    return 0
