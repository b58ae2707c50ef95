"""A round's outputs from its SWA models: out-of-fold predictions of each fold (its models of every mode averaged),
merged and scored; the honest post-processing search on them (RUN/postprocess.json); the test predictions of every
model with that setting (the submission and its probabilities), and the submission's check. Made again only when
their record of inputs (:mod:`engine.ensemble.reuse`) differs from what is asked now."""
from __future__ import annotations

from pathlib import Path

from engine.ensemble import steps
from engine.ensemble.naming import Job
from engine.ensemble.options import EnsembleOptions
from engine.ensemble.reuse import DataDigests, made_from, mark, reused
from tgs.errors import UserError


def prediction_options(opts: EnsembleOptions) -> dict:
    """The options every prediction of a round shares, as its record of inputs sees them."""
    return {"tta": opts.tta, "tuned_post": opts.tuned_post, "shared": opts.shared, "predict": opts.predict,
            "post_config": opts.post_config, "post": opts.post}


def ensemble_outputs(jobs: list[Job], opts: EnsembleOptions, data: DataDigests | None) -> dict:
    """Out-of-fold predictions, search, submission and its check (skipped when made from the same SWA models, data
    and options: a rerun of a finished round redoes nothing, and its pseudo-labels stay the same)."""
    lay = opts.layout
    done = {"submission": lay.submission.csv, "probabilities": lay.submission.npz, "oof": lay.merged_oof.npz,
            "postprocess": lay.postprocess}
    source = None
    if not opts.dry_run:
        files = {"models": [str(j.swa) for j in jobs]}
        if opts.post_config:
            files["post_config"] = opts.post_config
        source = made_from(opts, data, files, prediction_options(opts))
        wanted = [v for k, v in done.items() if k != "postprocess" or opts.tuned_post]
        if reused(lay.outputs_stamp, source, wanted, f"[outputs] the out-of-fold predictions, search and submission "
                                                     f"in {lay.root} were made from these models and options, reused"):
            return done
    out_of_fold(jobs, opts)
    search(opts)
    submission(jobs, opts)
    if source is not None:
        mark(lay.outputs_stamp, source)
    return done


def out_of_fold(jobs: list[Job], opts: EnsembleOptions) -> None:
    """Each fold's validation images predicted by its models (every mode), then merged and scored."""
    lay = opts.layout
    oof = []
    for fold in opts.folds:
        out = lay.oof(fold)
        step = steps.predict_options(opts, out.prefix, models=tuple(str(j.swa) for j in jobs if j.fold == fold),
                                     split="valid", data_fold=fold, folds_file=opts.folds_file)
        steps.run_here(steps.Predict(step), f"oof/{fold}", lay.log("oof"), dry=opts.dry_run)
        oof.append(str(out.npz))
    merged = steps.predict_options(opts, lay.merged_oof.prefix, merge_oof=tuple(oof), tta=False)
    steps.run_here(steps.Predict(merged), "oof", lay.log("oof"), dry=opts.dry_run)


def search(opts: EnsembleOptions) -> None:
    """The search groups the out-of-fold images by the folds they were predicted in: a fold's own tiles, and every
    mask its models never saw, are unknown to the mosaic rules. With mosaic folds a fold holds whole mosaics, so
    the rules can hardly act out of fold and are (honestly) not kept: the search says so."""
    lay = opts.layout
    step = steps.Search(str(lay.merged_oof.npz), str(Path(opts.data_dir) / "train.csv"), str(lay.postprocess),
                        opts.mosaics_csv, tuple(opts.folds), opts.folds_file)
    steps.run_here(step, "search", lay.log("search"), dry=opts.dry_run)


def submission(jobs: list[Job], opts: EnsembleOptions) -> None:
    """Every model on the test set with the searched setting (or the defaults), the mosaic rules it kept, and the
    submission's check."""
    lay = opts.layout
    sub = lay.submission
    mosaics = opts.mosaics_csv if opts.tuned_post else None
    step = steps.predict_options(opts, sub.prefix, post_config=str(lay.postprocess) if opts.tuned_post else None,
                                 models=tuple(str(j.swa) for j in jobs), mosaics=mosaics,
                                 message=f"ensemble of {len(jobs)} models ({','.join(opts.modes)} x "
                                         f"{len(opts.folds)} folds)")
    if not opts.dry_run and step.post.rules and not mosaics:
        raise UserError(f"--test-args --post-config {opts.post_config} asks for the mosaic rules "
                        f"{','.join(step.post.rules)}: use ensemble.py --mosaics, or a setting without them")
    steps.run_here(steps.Predict(step), "test", lay.log("test"), dry=opts.dry_run)
    steps.run_here(steps.Check(str(sub.csv), str(opts.data_dir)), "check", lay.log("test"), dry=opts.dry_run)
