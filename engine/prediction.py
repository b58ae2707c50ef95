"""What test.py does, from typed options: predict with checkpoints (or average saved probabilities, or merge
out-of-fold files), post-process, write the submission and the probabilities as a pair, score out-of-fold
predictions, print the kaggle submit line.

Every model pads or resizes with its own checkpoint's input spec and comes back at 101x101
(:func:`engine.predict.forward`, the code path of train.py's validation); probabilities are averaged in one
running mean, one model in memory at a time (:mod:`engine.inference`). Post-processing is
:mod:`tgs.postprocess`, then (with ``--mosaics``) the setting's mosaic rules (:mod:`tgs.mosaic_rules`), with every
train mask known except those of the predicted tiles.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets import kaggle
from datasets.kaggle import Layout, read_sample_submission
from engine import distributed, inference, logs
from engine.config import TrainConfig, trained_fold
from engine.layout import Outputs
from tgs import metric, mosaic_rules, postprocess, runtime, submission
from tgs import probabilities as P
from tgs.errors import UserError
from tgs.mosaic import Mosaics

COMPETITION = "tgs-salt-identification-challenge"


@dataclass(frozen=True)
class PredictOptions:
    """test.py's options. Exactly one source: ``models``, ``from_probabilities`` or ``merge_oof``."""

    output_prefix: str
    post: postprocess.PostProcess
    post_source: str = "defaults"
    models: tuple = ()
    from_probabilities: tuple = ()
    merge_oof: tuple = ()
    mosaics: str | None = None  # mosaics.csv: the layout the setting's mosaic rules use
    mosaic_context: bool = False  # tiles inside a mosaic predicted with their neighbours (engine.section_context)
    tta: bool = False
    split: str = "test"
    data_dir: str | None = None
    data_fold: str | None = None
    folds_file: str | None = None
    device: str = "auto"
    batch_size: int = 64
    amp: str = "none"
    channels_last: bool = False
    threads: int = 0
    decode_threads: int = 0
    no_cache: bool = False
    message: str | None = None

    @property
    def outputs(self) -> Outputs:
        return Outputs(self.output_prefix)

    @property
    def workers(self) -> int | None:
        return self.decode_threads or None


def fraction_empty(masks: np.ndarray) -> str:
    empty = ~masks.reshape(len(masks), -1).any(axis=1)
    return f"empty predictions: {empty.mean():.1%} ({int(empty.sum())} of {len(masks)})"


def score_lines(masks, truth, ids_note: str) -> list[str]:
    rep = metric.report(masks, truth)
    return [f"out-of-fold score of {ids_note}:", *rep.lines()]


def kaggle_line(csv: Path, message: str) -> str:
    return f"kaggle competitions submit -c {COMPETITION} -f {shlex.quote(str(csv))} -m {shlex.quote(message)}"


def describe(opts: PredictOptions, n_models: int) -> str:
    what = f"{n_models} model{'s' if n_models != 1 else ''}{' + flip TTA' if opts.tta else ''}"
    return f"{what}; {opts.post.describe()}"


def models_data(opts: PredictOptions, timer: inference.Timer) -> tuple:
    """(image set, data folder, device) of a prediction with checkpoints: the data folder and (for --split valid)
    the fold come from the first checkpoint unless given."""
    import models

    runtime.setup_cpu(opts.threads)
    device = distributed.resolve_device(opts.device)
    first = models.read_checkpoint(opts.models[0])["meta"]
    trained = TrainConfig.from_checkpoint(first, opts.models[0])
    data_dir = opts.data_dir or trained.data.data_dir
    t0 = time.perf_counter()
    if opts.split == "valid":
        fold = opts.data_fold or trained_fold(first)
        if not fold:
            raise UserError(f"{opts.models[0]} does not record its fold; give --data-fold")
        inference.check_split(opts.models[0], trained.data.folds_file, opts.folds_file)
        folds_file = opts.folds_file or trained.data.folds_file
        data = inference.valid_set(data_dir, fold, folds_file, cache=not opts.no_cache, workers=opts.workers)
    else:
        data = inference.test_set(data_dir, cache=not opts.no_cache, workers=opts.workers)
    timer.add("data", time.perf_counter() - t0)
    logs.info(f"{opts.split} set: {len(data)} images from {data_dir}{f' ({data.fold})' if data.fold else ''}; "
          f"{len(opts.models)} models on {device}")
    return data, data_dir, device


def predict_with_models(opts: PredictOptions, data: inference.ImageSet, device, timer: inference.Timer) -> tuple:
    """(probs, image_probs, model names) of the checkpoints on ``data``."""

    def check(path, loaded):
        fold = trained_fold(loaded.meta)
        if data.split == "valid" and fold is not None and fold != data.fold:
            raise UserError(f"{path} was trained on {fold}, not {data.fold}: its out-of-fold images are another "
                            f"fold's (predict each fold's validation images with that fold's models)")
        if data.split == "valid":
            kaggle.check_fingerprint(path, loaded.meta.get("data_fingerprint"), data.data_fingerprint,
                                     "these training images", inference.UNSEEN)

    t0 = time.perf_counter()
    probs, image_probs, names, forward_s = inference.predict_models(
        opts.models, data.images, device, batch_size=opts.batch_size, tta=opts.tta, amp=opts.amp,
        channels_last=opts.channels_last, check=check, log=logs.info)
    timer.add("loading models", time.perf_counter() - t0 - forward_s)
    timer.add("prediction", forward_s)
    return probs, image_probs, names


def with_context(opts: PredictOptions, data: inference.ImageSet, data_dir, device, probs, timer: inference.Timer):
    """--mosaic-context: the tiles inside a mosaic predicted within it (engine.section_context)."""
    from engine.section import Predictor
    from engine.section_context import context_probs

    t0 = time.perf_counter()
    predictor = Predictor(opts.models, device, opts.batch_size, opts.amp, opts.channels_last)
    out = context_probs(data.ids, probs, opts.mosaics, data_dir, predictor, log=logs.info)
    timer.add("mosaic context", time.perf_counter() - t0)
    return out


def from_probabilities(opts: PredictOptions, timer: inference.Timer) -> tuple:
    t0 = time.perf_counter()
    data, mean = inference.saved_predictions(opts.from_probabilities, opts.data_dir or "data",
                                             cache=not opts.no_cache, workers=opts.workers)
    timer.add("probabilities and data", time.perf_counter() - t0)
    logs.info(f"averaged {len(opts.from_probabilities)} probability files ({mean.split}, {len(data)} images)")
    return data, mean.probs, mean.image_probs, mean.models


def mosaic_context(opts: PredictOptions, data_dir, ids: np.ndarray) -> mosaic_rules.Context | None:
    """The layout of ``--mosaics`` (validated against the dataset's train and test ids) with the train masks of
    ``data_dir`` that may be used for the predicted ``ids``: every train mask but those of the predicted tiles
    (all of them for the test set; the other folds' for a fold's validation images). None without --mosaics."""
    if not opts.mosaics:
        return None
    layout = Layout.of(data_dir)
    layout.require("train_csv")
    train_ids, train_masks = submission.read_truth(layout.train_csv)
    test_ids = read_sample_submission(layout.sample_submission) if layout.sample_submission.is_file() else []
    mosaics = Mosaics.read(opts.mosaics, known_ids=np.concatenate([train_ids, np.asarray(test_ids, str)]))
    known = ~np.isin(train_ids, ids)
    ctx = mosaic_rules.Context(mosaics, train_ids[known], train_masks[known])
    near = int(ctx.next_to_known(ids).sum())
    logs.info(f"mosaics {opts.mosaics}: {len(mosaics)} tiles in {len(mosaics.sizes())} mosaics; {int(known.sum())} "
              f"train masks known; {near} of the {len(ids)} predicted tiles are next to one")
    return ctx


def apply_rules(opts: PredictOptions, ctx: mosaic_rules.Context | None, masks: np.ndarray,
                ids: np.ndarray) -> np.ndarray:
    """The setting's mosaic rules on the post-processed masks (printing how many tiles each changed)."""
    if ctx is None:
        return masks
    if not opts.post.rules:
        logs.info("no mosaic rules in the post-processing setting: the mosaics are not used")
        return masks
    outcome = ctx.apply(masks, ids, opts.post.rules)
    logs.info(f"mosaic rules changed: {outcome.line()}")
    return outcome.masks


def merge(opts: PredictOptions, timer: inference.Timer) -> int:
    t0 = time.perf_counter()
    merged, data, n_train = inference.merged_oof(opts.merge_oof, opts.data_dir, cache=not opts.no_cache,
                                                 workers=opts.workers)
    npz = P.save(opts.outputs.npz, merged.ids, merged.probs, merged.image_probs, merged.models, "valid")
    logs.info(f"merged {len(opts.merge_oof)} out-of-fold files: {len(merged)} images -> {npz}")
    if data is None:
        logs.info("(give --data-dir to order them as train.csv and score them)")
        return 0
    logs.info(f"covers {len(data)} of the {n_train} training images{' (all of them)' if len(data) == n_train else ''}")
    masks = postprocess.apply(merged.probs, merged.image_probs, data.images, opts.post)
    logs.info(f"post-processing: {opts.post.describe()} ({opts.post_source})")
    if opts.post.rules:
        logs.info("note: the mosaic rules are not applied to merged out-of-fold predictions (score.py --search "
                  "--mosaics evaluates them fold by fold)")
    logs.info(fraction_empty(masks))
    logs.info("\n".join(score_lines(masks, data.masks, f"{len(data)} images")))
    timer.add("merge", time.perf_counter() - t0)
    logs.info(f"search the post-processing: python score.py --search {shlex.quote(str(npz))} --truth "
          f"{shlex.quote(str(Path(opts.data_dir) / 'train.csv'))}")
    return 0


def run(opts: PredictOptions) -> int:
    timer = inference.Timer()
    if opts.merge_oof:
        return merge(opts, timer)
    if opts.models:
        data, data_dir, device = models_data(opts, timer)
        ctx = mosaic_context(opts, data_dir, data.ids)  # a bad mosaics file stops before the prediction
        probs, image_probs, names = predict_with_models(opts, data, device, timer)
        if opts.mosaic_context:
            probs = with_context(opts, data, data_dir, device, probs, timer)
    else:
        data, probs, image_probs, names = from_probabilities(opts, timer)
        ctx = mosaic_context(opts, opts.data_dir or "data", data.ids)

    t0 = time.perf_counter()
    masks = apply_rules(opts, ctx, postprocess.apply(probs, image_probs, data.images, opts.post), data.ids)
    timer.add("post-processing", time.perf_counter() - t0)
    t0 = time.perf_counter()
    csv, npz = inference.write(opts.outputs, data.ids, probs, image_probs, masks, names, data.split,
                               log=logs.info)
    timer.add("writing", time.perf_counter() - t0)
    logs.info(f"post-processing: {opts.post.describe()} ({opts.post_source})")
    logs.info(fraction_empty(masks))
    logs.info(f"wrote {csv} and {npz}")
    if data.split == "valid":
        logs.info("\n".join(score_lines(masks, data.masks, f"{len(data)} images"
                                    f"{f' of {data.fold}' if data.fold else ''}")))
    logs.info(timer.line())
    if data.split == "test":
        logs.info("submit with:")
        logs.info(kaggle_line(csv, opts.message or describe(opts, len(names))))
    return 0
