"""Pseudo-labels in the pipeline: making a ``pseudo-labels.npz`` from saved test predictions (:func:`make`, what
``pseudo.py`` runs), and reading one for training (:func:`for_training`, what ``train.py --pseudo-labels`` runs).
The rule and the file format are :mod:`tgs.pseudo`'s; the hard masks are :mod:`tgs.postprocess`'s.

A run trained on pseudo-labels records them in every checkpoint (``meta["pseudo_labels"]``: path, sha256
digest, number of images, :meth:`PseudoSet.meta`); :func:`mismatch` says whether a checkpoint saw other labels
than a file (:func:`file_meta`): the trainer refuses such a resume, and an ensemble should refuse to reuse such a
fold.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from datasets import kaggle
from engine import logs
from tgs import postprocess, pseudo
from tgs import probabilities as P
from tgs.errors import DataError, UserError, few
from tgs.submission import match_ids


def make(probabilities: str | os.PathLike, data_dir: str | os.PathLike, out: str | os.PathLike,
         post: postprocess.PostProcess = postprocess.DEFAULTS, rule: pseudo.Rule = pseudo.Rule(),
         post_source: str = "defaults", cache: bool = True, workers: int | None = None,
         log=logs.info, mosaics: str | os.PathLike | None = None,
         unknown_ids=()) -> tuple[pseudo.PseudoLabels, pseudo.Selection]:
    """Select pseudo-labels from the test predictions ``probabilities`` (a ``test.py`` / ensemble ``.npz`` of the
    test split, every test image of ``data_dir``): post-process them with ``post`` into hard masks (the labels),
    keep the images ``rule`` keeps, write them to ``out`` atomically and log a summary. Nothing is written when no
    image passes (a UserError says so)."""
    probs = P.load(probabilities)
    if probs.split != "test":
        raise UserError(f"--probabilities {probabilities} holds {probs.split!r} predictions; pseudo-labels are made "
                        "from test-set predictions (test.py without --split valid, or the ensemble's)")
    test = kaggle.load_test(data_dir, cache=cache, workers=workers)
    order = match_ids(probs.ids, test.ids, str(probabilities), "the test set of sample_submission.csv")
    ids, q, image_probs = probs.ids[order], probs.probs[order], probs.image_probs[order]
    masks = postprocess.apply(q, image_probs, test.images, post)
    if post.rules:
        masks = _with_rules(masks, ids, post.rules, mosaics, data_dir, unknown_ids, cache, workers, log)
    selection = pseudo.select(q, masks, postprocess.flat_images(test.images), rule)
    log(f"post-processing: {post.describe()} ({post_source})")
    for line in selection.lines(rule):
        log(line)
    if len(selection.index) == 0:
        raise UserError(f"no test image of {probabilities} passed the rule ({rule.describe()}); nothing written "
                        "(lower --min-confidence, or widen --lo/--hi)")
    labels = pseudo.PseudoLabels.of(ids, masks, selection, source=str(probabilities), rule=rule,
                                    postprocess={**post.to_dict(), "source": post_source})
    pseudo.save(out, labels)
    for line in pseudo.summary(labels, total=len(ids)):
        log(line)
    log(f"wrote {out}")
    return labels, selection


def _with_rules(masks, ids, rules, mosaics, data_dir, unknown_ids, cache, workers, log):
    """The setting's mosaic rules on the labels, the train masks known except ``unknown_ids`` (a fold's validation
    tiles when its labels must not carry their truth)."""
    from tgs import mosaic_rules
    from tgs.mosaic import Mosaics

    if mosaics is None:
        raise UserError(f"the post-processing setting has mosaic rules ({', '.join(rules)}) but no mosaics file was "
                        "given (--mosaics)")
    train = kaggle.load_train(data_dir, cache=cache, workers=workers)
    layout = Mosaics.read(mosaics, known_ids=np.concatenate([train.ids, np.asarray(ids, str)]))
    known = ~np.isin(train.ids, np.asarray(list(unknown_ids), str))
    outcome = mosaic_rules.Context(layout, train.ids[known], train.masks[known]).apply(masks, ids, rules)
    log(f"mosaic rules on the labels ({int((~known).sum())} train tiles treated as unknown): {outcome.line()}")
    return outcome.masks


@dataclass
class PseudoSet:
    """Pseudo-labelled test images to train on, with what identifies them."""

    path: str
    digest: str
    ids: np.ndarray  # (N,) str
    images: np.ndarray  # (N, 101, 101) uint8, test images
    masks: np.ndarray  # (N, 101, 101) bool, their labels

    def __len__(self) -> int:
        return len(self.ids)

    def meta(self) -> dict:
        """What a checkpoint records: ``{"path", "digest", "images"}``."""
        return {"path": self.path, "digest": self.digest, "images": len(self)}


def for_training(path: str | os.PathLike, data_dir: str | os.PathLike, train_ids: np.ndarray,
                 cache: bool = True) -> PseudoSet:
    """The labels of ``path`` with their test images from ``data_dir``. Every id must be a test id of the data set
    and none a training id (so no pseudo image can be a validation image); a DataError names the file otherwise."""
    where = f"--pseudo-labels {path}"
    if not Path(path).is_file():
        raise DataError(f"{where} does not exist")
    test = kaggle.load_test(data_dir, cache=cache)
    labels = pseudo.load(path, test_ids=test.ids)
    also_train = labels.ids[np.isin(labels.ids, train_ids)]
    if also_train.size:
        raise DataError(f"{where}: {also_train.size} ids are training ids too ({few(also_train, 3)}); pseudo-labels "
                        "must be test images only")
    position = pd.Index(test.ids).get_indexer(labels.ids)  # the test row of each label (all there: checked)
    return PseudoSet(str(path), pseudo.digest(path), labels.ids, test.images[position], labels.masks)


def file_meta(path: str | os.PathLike) -> dict:
    """``{"path", "digest"}`` of a labels file, without reading its images (what :func:`mismatch` compares)."""
    return {"path": str(path), "digest": pseudo.digest(path)}


def mismatch(meta: Mapping, current: Mapping | None) -> str | None:
    """Why a checkpoint (its ``meta``) was trained on other pseudo-labels than ``current`` (:meth:`PseudoSet.meta`
    or :func:`file_meta`; None: no pseudo-labels), or None when they are the same (the same sha256 digest, or
    none on either side)."""
    stored = meta.get("pseudo_labels")
    if stored is None and current is None:
        return None
    if stored is None:
        return f"it was trained without pseudo-labels, not with {current['path']}"
    if current is None:
        return (f"it was trained with the pseudo-labels {stored.get('path')} (sha256 {str(stored.get('digest'))[:12]}"
                "...); give the same --pseudo-labels")
    if stored.get("digest") != current["digest"]:
        return (f"it was trained on other pseudo-labels ({stored.get('path')}, sha256 "
                f"{str(stored.get('digest'))[:12]}...) than {current['path']} (sha256 {current['digest'][:12]}...)")
    return None
