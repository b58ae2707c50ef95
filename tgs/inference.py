"""Predicting whole image sets with any number of models: the library behind test.py (and ensemble.py).

- :func:`test_set` / :func:`valid_set`: the images to predict, as in-memory arrays (the test set in
  ``sample_submission.csv`` order; a fold's validation images of the training set, with their masks);
- :class:`Ensemble`: the running sum of the probabilities of any number of models, each loaded in turn, run with
  :func:`tgs.predict.forward` (the same code path as validation in train.py: every model pads or resizes with
  its own checkpoint's :class:`~tgs.inputs.InputSpec` and comes back at 101x101), optionally with flip TTA, and
  freed before the next. Batches are slices of the uint8 array (no DataLoader), sent to the device as uint8 and
  encoded there; their probabilities are added in place into one float32 (N, 101, 101) sum, so memory does not
  grow with the number of models;
- :func:`average_files` / :func:`saved_predictions`: the same average over saved ``.npz`` probabilities
  (ensembles built on several machines); :func:`merge_oof` / :func:`merged_oof`: per-fold out-of-fold predictions
  merged into one set;
- :func:`write`: the submission CSV and the ``.npz`` probabilities, both written atomically.
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

from tgs import probabilities as P
from tgs.errors import DataError, UserError

SIZE = 101


@dataclass
class ImageSet:
    """Images to predict: ``split`` is ``test`` or ``valid`` (a fold's validation images, with masks)."""

    ids: np.ndarray  # (N,) str
    images: np.ndarray  # (N, 101, 101) uint8
    split: str = "test"
    masks: np.ndarray | None = None  # (N, 101, 101) bool, valid split only
    fold: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index, fold: str | None = None) -> "ImageSet":
        """The images at ``index`` (positions or a boolean mask), e.g. one fold's or one file's."""
        masks = None if self.masks is None else self.masks[index]
        return ImageSet(self.ids[index], self.images[index], self.split, masks, fold)


def test_set(data_dir: str | os.PathLike, cache: bool = True, workers: int | None = None) -> ImageSet:
    """The test images in ``sample_submission.csv`` order (a missing image is a DataError naming its id)."""
    from datasets import kaggle

    t = kaggle.load_test(data_dir, cache=cache, workers=workers)
    return ImageSet(t.ids, t.images, "test")


def valid_set(data_dir: str | os.PathLike, fold: str, folds_file: str | None = None, cache: bool = True,
              workers: int | None = None) -> ImageSet:
    """The validation images (and masks) of ``fold``, in train.csv order: the split of train.py."""
    from datasets import folds

    train = train_set(data_dir, cache=cache, workers=workers)
    _, va = folds.split(train.ids, fold, folds_file)
    if len(va) == 0:
        raise UserError(f"--data-fold {fold}: no validation images")
    return train.take(va, fold)


def train_set(data_dir: str | os.PathLike, cache: bool = True, workers: int | None = None) -> ImageSet:
    """Every training image with its mask (for scoring merged out-of-fold predictions)."""
    from datasets import kaggle

    train = kaggle.load_train(data_dir, cache=cache, workers=workers)
    return ImageSet(train.ids, train.images, "valid", train.masks)


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
    """Running sum of the probabilities of models predicting the same images (one float32 (N, 101, 101) sum)."""

    def __init__(self, n: int, size: int = SIZE):
        self.sum = np.zeros((n, size, size), np.float32)
        self.image_sum = np.zeros(n, np.float64)
        self.image_known = np.ones(n, bool)
        self.count = 0
        self.models: list[str] = []
        self.forward_seconds = 0.0

    @torch.inference_mode()
    def add_model(self, model: torch.nn.Module, spec, images: np.ndarray, device: torch.device, *,
                  batch_size: int = 64, tta: bool = False, amp: str = "none", channels_last: bool = False,
                  name: str = "") -> None:
        """Predict ``images`` (N, 101, 101) uint8 with ``model`` (eval mode, on ``device``) and add them in."""
        from tgs import predict

        if len(images) != len(self.sum):
            raise ValueError(f"{len(images)} images for a sum of {len(self.sum)}")
        sum_t = torch.from_numpy(self.sum)
        image_sum = np.zeros(len(images), np.float64)
        t0 = time.perf_counter()
        for first, (batch,) in predict.batches([images], batch_size, device):
            pred = predict.forward(model, spec, batch, tta=tta, amp=amp, channels_last=channels_last)
            sum_t[first:first + len(batch)] += pred.probs[:, 0].float().cpu()
            image_sum[first:first + len(batch)] = pred.image_prob.double().cpu().numpy()
        self.forward_seconds += time.perf_counter() - t0
        self.image_known &= np.isfinite(image_sum)
        self.image_sum += np.nan_to_num(image_sum)
        self.count += 1
        if name:
            self.models.append(name)

    def mean(self) -> tuple[np.ndarray, np.ndarray]:
        """(probs (N, 101, 101) float32, image_probs (N,) float32, NaN where unknown); the sum becomes the mean
        in place (no second (N, 101, 101) array), so call it once, at the end."""
        if self.count == 0:
            raise UserError("no model to average")
        if self.count > 1:
            self.sum *= np.float32(1.0 / self.count)
        img = (self.image_sum / self.count).astype(np.float32)
        self.count, self.image_sum = 1, img.astype(np.float64)  # the sums now hold the mean
        return self.sum, np.where(self.image_known, img, np.nan).astype(np.float32)


def predict_models(paths: Sequence[str | os.PathLike], images: np.ndarray, device: torch.device, *,
                   batch_size: int = 64, tta: bool = False, amp: str = "none", channels_last: bool = False,
                   check=None, log=print) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Average the probabilities of checkpoints ``paths`` on ``images``, one model in memory at a time.

    ``check(path, loaded)`` may refuse a model (raise UserError) after it is loaded and before it predicts.
    Returns (probs, image_probs, model names, forward seconds).
    """
    import models

    ens = Ensemble(len(images))
    for i, path in enumerate(paths):
        loaded = models.load(path, device=device)
        if check is not None:
            check(path, loaded)
        if channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        ens.add_model(loaded.model, loaded.input_spec, images, device, batch_size=batch_size, tta=tta, amp=amp,
                      channels_last=channels_last, name=str(path))
        spec = loaded.input_spec
        log(f"model {i + 1}/{len(paths)}: {path} ({spec.mode} {spec.source}->{spec.size}, "
            f"{loaded.config.encoder}{', tta' if tta else ''}) {time.perf_counter() - t0:.1f} s")
        del loaded
        release(device)
    probs, image_probs = ens.mean()
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
    from tgs.submission import match_ids

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


def write(prefix: str, ids: np.ndarray, probs: np.ndarray, image_probs: np.ndarray, masks: np.ndarray | None,
          models: Sequence[str], split: str) -> tuple[Path | None, Path]:
    """``PREFIX-submission.csv`` (when masks are given) and ``PREFIX-probabilities.npz``, both atomic."""
    from tgs import submission

    npz = Path(f"{prefix}-probabilities.npz")
    P.save(npz, ids, probs, image_probs, models, split)
    csv = None
    if masks is not None:
        csv = Path(f"{prefix}-submission.csv")
        submission.write(csv, ids, masks=masks)
    return csv, npz
