"""Self-training rounds: the options of round r (:func:`round_options`) and the pseudo-labels the next round
trains on, chosen from this round's test predictions (:func:`next_labels`, :mod:`engine.pseudo`)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.ensemble import steps
from engine.ensemble.naming import Job
from engine.ensemble.options import EnsembleOptions
from engine.ensemble.outputs import prediction_options
from engine.ensemble.reuse import DataDigests, made_from, mark, reused
from engine.layout import EnsembleLayout
from tgs import mosaic_rules, postprocess


def round_options(opts: EnsembleOptions, r: int, labels) -> EnsembleOptions:
    """The options of round ``r``: round 0 is the run itself; round r >= 1 trains every fold again, into
    RUN/round{r}/, with ``labels`` (one file, or one per fold)."""
    if r == 0:
        return opts
    return replace(opts, run_dir=str(opts.layout.round(r).root), pseudo_labels=labels)


def post_setting(opts: EnsembleOptions) -> tuple:
    """The post-processing the round's submission used: its out-of-fold search's, or the defaults."""
    lay = opts.layout
    if opts.tuned_post and lay.postprocess.is_file():
        return postprocess.load_setting(lay.postprocess)[0], str(lay.postprocess)
    return postprocess.DEFAULTS, "defaults"


def next_labels(jobs: list[Job], opts: EnsembleOptions, data: DataDigests | None):
    """Pseudo-labels for the next round from this round's test predictions.

    ``ensemble`` (the 1st place's way): one file from the whole ensemble's submission. Every fold's models trained
    on the other folds' validation images, so the next round's out-of-fold score is optimistic.
    ``fold``: for each fold, the test predictions of that fold's own models only (they never saw its validation
    images), post-processed with the defaults (the searched setting was chosen on every fold's truth) and the mosaic
    rules that the search chose without this fold (``rules_by_fold``), its validation tiles unknown to them, so the
    next round's out-of-fold score of that fold stays honest. Labels made from the same inputs are kept as they
    are. Returns a path or ((fold, path), ...)."""
    lay = opts.layout
    if opts.dry_run:
        return str(lay.pseudo_labels) if opts.pseudo_source == "ensemble" else tuple(
            (f, str(lay.fold_pseudo_labels(f))) for f in opts.folds)
    if opts.pseudo_source == "ensemble":
        return ensemble_labels(opts, data)
    return tuple((fold, fold_labels(fold, jobs, opts, data)) for fold in opts.folds)


def ensemble_labels(opts: EnsembleOptions, data: DataDigests) -> str:
    """One labels file from the ensemble's test probabilities (their digest: made with these models, TTA and
    options) and the submission's post-processing."""
    from engine import pseudo as pseudo_engine

    lay = opts.layout
    post, source = post_setting(opts)
    labels_from = made_from(opts, data, {"probabilities": str(lay.submission.npz)},
                            {"rule": opts.pseudo_rule, "post": post})
    if not _labels_reused(lay.pseudo_labels, labels_from):
        pseudo_engine.make(lay.submission.npz, opts.data_dir, lay.pseudo_labels, post=post, rule=opts.pseudo_rule,
                           post_source=source, mosaics=opts.mosaics_csv)
        mark(lay.stamp_of(lay.pseudo_labels), labels_from)
    return str(lay.pseudo_labels)


def fold_labels(fold: str, jobs: list[Job], opts: EnsembleOptions, data: DataDigests) -> str:
    """One fold's labels from its own models' test predictions (see :func:`next_labels`)."""
    from datasets.folds import split
    from datasets.kaggle import load_train
    from engine import pseudo as pseudo_engine

    lay = opts.layout
    by_fold = {}
    if opts.mosaics_csv and opts.tuned_post and lay.postprocess.is_file():
        by_fold = postprocess.load_setting(lay.postprocess)[1].rules_by_fold or {}
    rules = mosaic_rules.parse_rules(by_fold.get(fold, ()), f"{lay.postprocess}: rules_by_fold")
    swas = tuple(str(j.swa) for j in jobs if j.fold == fold)
    out = lay.fold_pseudo_labels(fold)
    labels_from = made_from(opts, data, {"models": list(swas)},
                            {"rule": opts.pseudo_rule, "rules": rules, **prediction_options(opts)})
    if _labels_reused(out, labels_from):
        return str(out)
    prefix = lay.fold_test(fold)
    steps.run_here(steps.Predict(steps.predict_options(opts, prefix.prefix, models=swas)), f"pseudo/{fold}",
                   lay.log("pseudo"))
    train_ids = load_train(opts.data_dir).ids
    _, valid = split(train_ids, fold, opts.folds_file)
    # the defaults, and the mosaic rules that the search chose without this fold's truth; its tiles unknown
    post = replace(postprocess.DEFAULTS, rules=rules)
    pseudo_engine.make(prefix.npz, opts.data_dir, out, rule=opts.pseudo_rule, post=post, mosaics=opts.mosaics_csv,
                       unknown_ids=train_ids[valid],
                       post_source=f"defaults{' + the mosaic rules ' + ','.join(rules) if rules else ''} (the labels "
                                   f"of {fold} see no setting searched on its truth, and none of its tiles' masks)")
    mark(lay.stamp_of(out), labels_from)
    return str(out)


def _labels_reused(path: Path, source: dict) -> bool:
    """True (and said) when the pseudo-labels ``path`` were made from the same inputs: a rerun keeps them byte for
    byte, so the next round's finished folds, trained on them, stay reusable."""
    return reused(EnsembleLayout.stamp_of(path), source, [path],
                  f"[pseudo] {path} was made from these models and options, reused")
