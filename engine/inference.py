"""Predicting whole image sets with any number of models: what test.py (engine.prediction) and the reports run.

- :func:`test_set` / :func:`valid_set`: the images to predict, as in-memory arrays (the test set in
  ``sample_submission.csv`` order; a fold's validation images of the training set, with their masks);
- :class:`Ensemble`: the running sum of the probabilities of any number of models, each loaded in turn, run with
  :func:`engine.predict.forward` (the same code path as validation in train.py: every model pads or resizes with
  its own checkpoint's :class:`~tgs.inputs.InputSpec` and comes back at 101x101), optionally with flip TTA, and
  freed before the next. Batches are slices of the uint8 array (no DataLoader), sent to the device as uint8 and
  encoded there; their probabilities go into one float32 (N, 101, 101) running mean
  (:class:`tgs.probabilities.RunningMean`), so memory does not grow with the number of models;
- :func:`average_files` / :func:`saved_predictions`: the same average over saved ``.npz`` probabilities
  (ensembles built on several machines); :func:`merge_oof` / :func:`merged_oof`: per-fold out-of-fold predictions
  merged into one set;
- :func:`write`: the submission CSV and the ``.npz`` probabilities, written as a consistent pair.
"""
from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from datasets import folds, kaggle
from engine import predict
from engine.layout import Outputs
from tgs import TILE, submission
from tgs import probabilities as P
from tgs.errors import DataError, UserError
from tgs.io import atomic_paths, remove_stale_temporaries
from tgs.progress import bar
from tgs.submission import match_ids


@dataclass
class ImageSet:
    """Images to predict: ``split`` is ``test`` or ``valid`` (a fold's validation images, with masks)."""

    ids: np.ndarray  # (N,) str
    images: np.ndarray  # (N, 101, 101) uint8
    split: str = "test"
    masks: np.ndarray | None = None  # (N, 101, 101) bool, valid split only
    fold: str | None = None
    data_fingerprint: str | None = None  # valid split: the whole training set's (kaggle.TrainSet.fingerprint)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index, fold: str | None = None) -> "ImageSet":
        """The images at ``index`` (positions or a boolean mask), e.g. one fold's or one file's."""
        masks = None if self.masks is None else self.masks[index]
        return ImageSet(self.ids[index], self.images[index], self.split, masks, fold, self.data_fingerprint)


def test_set(data_dir: str | os.PathLike, cache: bool = True, workers: int | None = None) -> ImageSet:
    """The test images in ``sample_submission.csv`` order (a missing image is a DataError naming its id)."""
    t = kaggle.load_test(data_dir, cache=cache, workers=workers)
    return ImageSet(t.ids, t.images, "test")


def valid_set(data_dir: str | os.PathLike, fold: str, folds_file: str | None = None, cache: bool = True,
              workers: int | None = None) -> ImageSet:
    """The validation images (and masks) of ``fold``, in train.csv order: the split of train.py."""
    train = train_set(data_dir, cache=cache, workers=workers)
    _, va = folds.split(train.ids, fold, folds_file)
    if len(va) == 0:
        raise UserError(f"--data-fold {fold}: no validation images")
    return train.take(va, fold)


UNSEEN = "its fold's validation images are not the ones it never saw"


def check_split(model: str | os.PathLike, trained_folds_file: str | None, folds_file: str | None) -> None:
    """A model's validation images are its fold's under the split it trained with: another ``--folds-file`` would
    put images it trained on among them (an optimistic score), so it is refused with one line."""
    if folds_file is None:
        return
    given = Path(folds_file)
    if trained_folds_file is not None:
        trained = Path(trained_folds_file)
        if given.resolve() == trained.resolve() or (given.is_file() and trained.is_file()
                                                     and given.read_bytes() == trained.read_bytes()):
            return
    split = trained_folds_file or "the 10 consecutive chunks of train.csv"
    raise UserError(f"--folds-file {folds_file}: {model} was trained with the folds of {split}; under another split "
                    "its validation images would include images it trained on (leave out --folds-file)")


def train_set(data_dir: str | os.PathLike, cache: bool = True, workers: int | None = None) -> ImageSet:
    """Every training image with its mask (for scoring merged out-of-fold predictions)."""
    train = kaggle.load_train(data_dir, cache=cache, workers=workers)
    return ImageSet(train.ids, train.images, "valid", train.masks, data_fingerprint=train.fingerprint())


def release(device: torch.device) -> None:
    """Give a freed model's memory back (the CUDA caching allocator keeps it otherwise)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Timer:
    """Seconds spent per phase, printed by test.py."""

    spent: dict = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.spent.items())
        return f"time: {parts}; total {time.perf_counter() - self.start:.1f} s"


class Ensemble:
    """Running mean of the probabilities of models predicting the same images (a
    :class:`tgs.probabilities.RunningMean`: one float32 (N, 101, 101) sum).

    On the CPU each batch is added in place into the sum; on a GPU a model's batches are summed on the device and
    copied to the host once per model, so prediction never waits for a host copy after each batch."""

    def __init__(self, n: int, size: int = TILE):
        self.mean = P.RunningMean(np.arange(n).astype(str), (n, size, size))
        self.forward_seconds = 0.0

    @property
    def count(self) -> int:
        return self.mean.count

    @property
    def models(self) -> list[str]:
        return self.mean.models

    @torch.inference_mode()
    def add_model(self, model: torch.nn.Module, spec, images: np.ndarray, device: torch.device, *,
                  batch_size: int = 64, tta: bool = False, amp: str = "none", channels_last: bool = False,
                  name: str = "", progress=None) -> None:
        """Predict ``images`` (N, 101, 101) uint8 with ``model`` (eval mode, on ``device``) and add them in.
        ``progress(n)`` is called after each batch of ``n`` images. Non-finite probabilities are a DataError
        naming the model (a diverged model is never averaged into a submission)."""
        n = len(self.mean.sum)
        if len(images) != n:
            raise ValueError(f"{len(images)} images for a sum of {n}")
        on_host = device.type == "cpu"
        acc = torch.from_numpy(self.mean.sum) if on_host else torch.zeros((n, *self.mean.sum.shape[1:]),
                                                                          device=device)
        image = torch.zeros(n, dtype=torch.float64, device=device)
        finite = torch.ones((), dtype=torch.bool, device=device)
        t0 = time.perf_counter()
        for first, (batch,) in predict.batches([images], batch_size, device):
            pred = predict.forward(model, spec, batch, tta=tta, amp=amp, channels_last=channels_last)
            probs = pred.probs[:, 0].float()
            finite &= torch.isfinite(probs).all()
            acc[first:first + len(batch)] += probs
            image[first:first + len(batch)] = pred.image_prob.double()
            if progress is not None:
                progress(len(batch))
        if not bool(finite):  # the run stops here: the sum is not used again
            raise DataError(f"{name or 'a model'} predicts non-finite probabilities (its weights diverged); "
                            "it is not used")
        if not on_host:
            self.mean.sum += acc.cpu().numpy()
        self.forward_seconds += time.perf_counter() - t0
        self.mean.add_batch(0, None, image.cpu().numpy(), count=n)
        self.mean.close_set(name)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs (N, 101, 101) float32, image_probs (N,) float32, NaN where unknown); the sum becomes the mean
        in place, so call it once, at the end."""
        if self.mean.count == 0:
            raise UserError("no model to average")
        out = self.mean.mean()
        return out.probs, out.image_probs


def predict_models(paths: Sequence[str | os.PathLike], images: np.ndarray, device: torch.device, *,
                   batch_size: int = 64, tta: bool = False, amp: str = "none", channels_last: bool = False,
                   check=None, log=print) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Average the probabilities of checkpoints ``paths`` on ``images``, one model in memory at a time.

    ``check(path, loaded)`` may refuse a model (raise UserError) after it is loaded and before it predicts.
    Returns (probs, image_probs, model names, forward seconds).
    """
    import models

    ens = Ensemble(len(images))
    progress = bar(desc="predict", total=len(images) * len(paths), unit="img")
    for i, path in enumerate(paths):
        loaded = models.load(path, device=device)
        if not all(bool(torch.isfinite(t).all()) for t in loaded.model.state_dict().values()
                   if t.is_floating_point()):
            raise DataError(f"{path}: the model's weights are not finite (a diverged run); it is not used")
        if check is not None:
            check(path, loaded)
        if channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        ens.add_model(loaded.model, loaded.input_spec, images, device, batch_size=batch_size, tta=tta, amp=amp,
                      channels_last=channels_last, name=str(path), progress=progress.update)
        spec = loaded.input_spec
        log(f"model {i + 1}/{len(paths)}: {path} ({spec.mode} {spec.source}->{spec.size}, "
            f"{loaded.config.encoder}{', tta' if tta else ''}) {time.perf_counter() - t0:.1f} s")
        del loaded
        release(device)
    progress.close()
    probs, image_probs = ens.result()
    return probs, image_probs, ens.models, ens.forward_seconds


def average_files(paths: Sequence[str | os.PathLike]) -> P.Probabilities:
    """Average saved probabilities of the same images (one set in memory at a time besides the sum)."""
    mean = P.RunningMean()
    splits = set()
    for path in paths:
        p = P.load(path)
        splits.add(p.split)
        if len(splits) > 1:
            other = sorted(splits - {p.split})[0]
            raise UserError(f"{path}: its split is {p.split!r} but an earlier file's is {other!r}; "
                            "test and out-of-fold predictions cannot be averaged together")
        mean.add(p.ids, p.probs, p.image_probs, source=str(path))  # unknown image probabilities stay unknown
        del p
    out = mean.mean()
    out.split = splits.pop()
    return out


def saved_predictions(paths: Sequence[str | os.PathLike], data_dir: str | os.PathLike, cache: bool = True,
                      workers: int | None = None) -> tuple[ImageSet, P.Probabilities]:
    """The mean of saved probability files and the images they predict, in the dataset's order: the test set in
    ``sample_submission.csv`` order, or (out-of-fold files) their training images in train.csv order. The files'
    ids must be exactly those (a DataError names the first file and the first odd ids)."""
    mean = average_files(paths)
    if mean.split == "test":
        data = test_set(data_dir, cache=cache, workers=workers)
        what = "the test set of sample_submission.csv"
    else:
        train = train_set(data_dir, cache=cache, workers=workers)
        data = train.take(np.isin(train.ids, mean.ids))
        what = "train.csv"
    order = match_ids(mean.ids, data.ids, str(paths[0]), what)
    return data, P.Probabilities(mean.ids[order], mean.probs[order], mean.image_probs[order], mean.models,
                                 mean.split)


def merged_oof(paths: Sequence[str | os.PathLike], data_dir: str | os.PathLike | None = None, cache: bool = True,
               workers: int | None = None) -> tuple[P.Probabilities, ImageSet | None, int]:
    """(merged out-of-fold predictions, their training images and masks, number of training images): in
    train.csv order when ``data_dir`` is given; without it the files' order, and no images (None, 0)."""
    if data_dir is None:
        return merge_oof(paths), None, 0
    train = train_set(data_dir, cache=cache, workers=workers)
    merged = merge_oof(paths, train.ids)
    return merged, train.take(np.isin(train.ids, merged.ids)), len(train)


def merge_oof(paths: Sequence[str | os.PathLike], train_ids: np.ndarray | None = None) -> P.Probabilities:
    """Concatenate per-fold out-of-fold predictions (disjoint ids), in train.csv order when ``train_ids`` given.

    The probabilities are those the files hold (float32 ``q / 255``): saving them again is lossless."""
    ids, probs, img, models_ = [], [], [], []
    seen: dict[str, str] = {}
    for path in paths:
        p = P.load(path)
        if p.split != "valid":
            raise UserError(f"{path} holds {p.split!r} predictions, not out-of-fold ('valid') ones "
                            "(make them with test.py --split valid)")
        for ident in p.ids[np.isin(p.ids, list(seen))][:1]:
            raise UserError(f"{path}: id {ident} is also in {seen[ident]}; out-of-fold files to merge must hold "
                            "disjoint folds")
        seen.update(dict.fromkeys(p.ids.tolist(), str(path)))
        ids.append(p.ids)
        probs.append(p.probs)
        img.append(p.image_probs)
        models_ += p.models
    if not ids:
        raise UserError("no out-of-fold file to merge")
    all_ids, q, all_img = np.concatenate(ids), np.concatenate(probs), np.concatenate(img)
    if train_ids is not None:
        unknown = all_ids[~np.isin(all_ids, train_ids)]
        if unknown.size:
            raise DataError(f"id {unknown[0]} of the out-of-fold files is not in train.csv ({unknown.size} such ids)")
        order = np.argsort(_positions(train_ids, all_ids), kind="stable")
        all_ids, q, all_img = all_ids[order], q[order], all_img[order]
    return P.Probabilities(all_ids, q, all_img, models_, "valid")


def _positions(reference: np.ndarray, ids: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.Index(reference).get_indexer(ids)


def write(outputs: Outputs, ids: np.ndarray, probs: np.ndarray, image_probs: np.ndarray, masks: np.ndarray | None,
          models: Sequence[str], split: str, log=print) -> tuple[Path | None, Path]:
    """``PREFIX-probabilities.npz`` and (when masks are given) ``PREFIX-submission.csv``, written as a pair: both
    are complete on disk before either replaces its old version, and the old versions are removed first, so a kill
    or a full disk never leaves a new file beside an old one (on a full disk the old pair stays). Says what it
    overwrites."""
    targets = [outputs.npz] + ([outputs.csv] if masks is not None else [])
    old = [p for p in (outputs.npz, outputs.csv) if p.exists()]
    if old:
        log(f"overwriting {' and '.join(map(str, old))}")
    remove_stale_temporaries(outputs.npz.parent, [p.name for p in (outputs.npz, outputs.csv)])
    with atomic_paths(*targets, replace_also=[outputs.csv]) as tmps:
        P.save(tmps[0], ids, probs, image_probs, models, split, atomic=False)
        if masks is not None:
            submission.write(tmps[1], ids, masks=masks, atomic=False)
    return (outputs.csv if masks is not None else None), outputs.npz
