"""Stochastic weight averaging of one fold's checkpoints, with BatchNorm statistics recomputed on its data.

1. Sources: model files, or folders whose ``*.pth`` / ``*.pt`` files are all taken (``runs/fold0/models``:
   last, best-metric, best-loss, best-accuracy and the cosine-cycle snapshots). A path named twice counts once,
   and files holding the *same weights* (train.py saves best-metric, best-loss and last from the same epoch when
   that epoch improved all three) count once: the average is over distinct points of the trajectory, each with
   weight 1. Every source must have the same model config and the same input spec (pad/resize, size, border);
   the first pair that differs is refused with one line naming the two files.
2. Equal average of every floating-point tensor of the state dicts (parameters and buffers), accumulated in
   float64 one file at a time (memory: one checkpoint and one sum). Integer buffers (BatchNorm's
   ``num_batches_tracked``) are reset by step 3.
3. BatchNorm statistics are recomputed: every BN layer's running mean/var are reset and re-estimated over the
   fold's training images (the images train.py trained on: data dir, fold, folds file and drop-mask threshold
   from the checkpoint meta unless given), without augmentation, through the model's own input mode
   (``InputSpec.encode_images``). Only the BN layers are in training mode (dropout stays off, as at prediction
   time, so the statistics are those of the activations the model sees when it predicts); each batch updates
   the running statistics with momentum ``b / (seen + b)``, so the result is the average over *images* of the
   batch statistics (equal to torch's ``momentum=None`` cumulative average when all batches have the same
   size, and exact, without the last small batch weighing as much as a full one, when they do not). A last
   batch of a single image joins the batch before it (BatchNorm cannot train on one value per channel, which is
   what a 1x1 bottleneck gives for one image).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from datasets import folds, kaggle
from engine import distributed, predict
from engine.config import TrainConfig, trained_fold
from engine.config import options as train_options
from engine.config import spec as train_option
from tgs import runtime
from tgs.errors import DataError, UserError
from tgs.inputs import InputSpec
from tgs.io import remove_stale_temporaries
from tgs.png import DECODE_THREADS
from tgs.progress import bar

SUFFIXES = (".pth", ".pt")


@dataclass
class Source:
    path: Path
    epoch: object = None
    kind: object = None
    fold: object = None


@dataclass
class Averaged:
    model: nn.Module
    input_spec: object
    sources: list[Source]
    skipped: list[tuple[Path, Path]] = field(default_factory=list)  # (duplicate, the file it repeats)
    meta: dict = field(default_factory=dict)  # the first source's meta


def expand_inputs(inputs: Sequence[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Files from files and folders (a folder: its *.pth/*.pt files, sorted), each resolved path once."""
    out: list[Path] = []
    seen: set[Path] = {Path(p).resolve() for p in exclude}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
            if not files:
                raise UserError(f"--input {path}: no .pth model files in this folder")
        elif path.is_file():
            files = [path]
        else:
            raise UserError(f"--input {path} does not exist")
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise UserError("--input: no model files to average")
    return out


def digest(state_dict: dict) -> str:
    """A hash of the weights (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha1()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _comparable_config(raw: dict) -> dict:
    return {k: v for k, v in raw["model_config"].items() if k != "pretrained"}


def _difference(a: dict, b: dict) -> str:
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])


def average(paths: Sequence[Path], log: Callable[[str], None] = print, allow_mixed_folds: bool = False) -> Averaged:
    """Equal average of the distinct checkpoints ``paths`` (see the module docstring).

    Checkpoints of different folds are refused unless ``allow_mixed_folds`` (swa.py: an explicit --data-fold).
    """
    import models

    first_raw = None
    total: dict[str, torch.Tensor] = {}
    sources: list[Source] = []
    skipped: list[tuple[Path, Path]] = []
    digests: dict[str, Path] = {}
    for path in paths:
        raw = models.read_checkpoint(path)
        if first_raw is None:
            first_raw, first_path = raw, path
        else:
            if _comparable_config(raw) != _comparable_config(first_raw):
                raise UserError(f"cannot average {first_path} and {path}: different architectures "
                                f"({_difference(_comparable_config(first_raw), _comparable_config(raw))})")
            if raw["input_spec"] != first_raw["input_spec"]:
                raise UserError(f"cannot average {first_path} and {path}: different input modes "
                                f"({_difference(first_raw['input_spec'], raw['input_spec'])})")
            if set(raw["state_dict"]) != set(first_raw["state_dict"]):
                raise UserError(f"cannot average {first_path} and {path}: their state dicts have different keys")
            fold_a, fold_b = trained_fold(first_raw["meta"]), trained_fold(raw["meta"])
            if fold_a != fold_b and not allow_mixed_folds:
                raise UserError(f"cannot average {first_path} and {path}: different folds ({fold_a} vs {fold_b}); "
                                "average one fold's models (or name the fold for BatchNorm with --data-fold)")
        key = digest(raw["state_dict"])
        if key in digests:
            skipped.append((Path(path), digests[key]))
            log(f"skip {path}: same weights as {digests[key]}")
            continue
        digests[key] = Path(path)
        for name, t in raw["state_dict"].items():
            if t.is_floating_point():
                if name in total and total[name].shape != t.shape:
                    raise UserError(f"cannot average {first_path} and {path}: {name} has shape "
                                    f"{tuple(total[name].shape)} vs {tuple(t.shape)}")
                if name in total:
                    total[name].add_(t.double())
                else:
                    total[name] = t.double().clone()
        meta = raw["meta"]
        kind = meta.get("kind") or "+".join(meta.get("names") or []) or "model"
        sources.append(Source(Path(path), meta.get("epoch"), kind, trained_fold(meta)))
        log(f"average {path} (epoch {meta.get('epoch', '?')}, {kind})")
    n = len(sources)
    model = models.model_from_checkpoint(first_raw, first_path)
    state = model.state_dict()
    with torch.no_grad():
        for name, t in total.items():
            state[name].copy_((t / n).to(state[name].dtype))
    return Averaged(model, InputSpec.from_dict(first_raw["input_spec"]), sources, skipped, dict(first_raw["meta"]))


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def bn_batches(n: int, size: int) -> list[tuple[int, int]]:
    """``(first, end)`` of the batches of a BatchNorm pass over ``n`` images: consecutive batches of ``size``, a
    last batch of one image merged into the one before (BatchNorm in training mode needs more than one value per
    channel, and a model whose bottleneck is 1x1 gets just one from a single image)."""
    edges = list(range(0, n, size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return list(zip(edges[:-1], edges[1:]))


@torch.no_grad()
def update_bn(model: nn.Module, spec, images: np.ndarray, device: torch.device, batch_size: int = 32,
              amp: str = "none") -> int:
    """Recompute every BatchNorm layer's running statistics over ``images`` (N, 101, 101) uint8, in order,
    with the BN layers alone in training mode; returns the number of batches. The model ends in eval mode.

    Not ``torch.optim.swa_utils.update_bn``, which does the same reset and pass but puts the whole model in
    training mode (dropout on: statistics of activations the model never sees when it predicts) and weighs every
    batch equally (``momentum=None``: a short last batch counts as much as a full one); here only the BN layers
    train and the momentum ``b / (seen + b)`` weighs each image once."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    if len(images) == 0:
        raise UserError("no training images to recompute the BatchNorm statistics with")
    momenta = [m.momentum for m in layers]
    model.to(device).eval()
    for m in layers:
        m.reset_running_stats()
        m.train()
    seen = batches = 0
    progress = bar(desc="BatchNorm", total=len(images), unit="img")
    try:
        for first, end in bn_batches(len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[first:end]))[:, None].to(device)
            b = len(batch)
            for m in layers:
                m.momentum = b / (seen + b)
            x = spec.encode_images(batch)
            with predict.autocast(device, amp):
                try:
                    model(x)
                except ValueError as exc:  # a single image in all, through a 1x1 bottleneck
                    raise UserError(f"cannot recompute BatchNorm over {len(images)} image(s): "
                                    f"{str(exc).splitlines()[0]}") from None
            seen += b
            batches += 1
            progress.update(b)
    finally:
        progress.close()
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return batches


def _run_only(why: str) -> dict:
    """The metadata of a SwaOptions field that never changes the averaged model, and ``why``."""
    return {"run_only": why}


@dataclass(frozen=True)
class SwaOptions:
    """swa.py's options; None: the averaged checkpoints' setting (their training config). A field named as a
    training option is that option (its declaration in engine/config.py says what it changes, :data:`RUN_ONLY`)."""

    inputs: tuple = field(metadata=_run_only("where the fold's models are: they are checked as its training run"))
    output: str = field(metadata=_run_only("where the average goes"))
    data_dir: str | None = None
    data_fold: str | None = None
    folds_file: str | None = field(default=None, metadata=_run_only("its contents' digest is recorded instead"))
    drop_mask_threshold: int | None = None
    batch_size: int | None = None
    device: str = "auto"
    amp: str = "none"
    threads: int = 0
    decode_threads: int = field(default=0, metadata={"option": DECODE_THREADS})
    no_cache: bool = False


def _changes_nothing(f) -> bool:
    """Whether a SwaOptions field never changes the averaged model: said on the field, else on its declaration (a
    training option's, or the field's own ``option``)."""
    if "run_only" in f.metadata:
        return True
    option = f.metadata.get("option") or (train_option(f.name) if f.name in train_options() else None)
    return bool(option and option.run_only)


# the SWA options that never change the averaged model (a fold's SWA model made otherwise is reused)
RUN_ONLY = tuple(f.name for f in fields(SwaOptions) if _changes_nothing(f))


def run(opts: SwaOptions, log: Callable[[str], None] = print) -> int:
    """Average, recompute BatchNorm on the fold's training images, write the checkpoint (see the module doc)."""
    import time

    import models

    runtime.setup_cpu(opts.threads)
    device = distributed.resolve_device(opts.device)
    t0 = time.time()
    paths = expand_inputs(opts.inputs, exclude=[opts.output])
    avg = average(paths, log=log, allow_mixed_folds=opts.data_fold is not None)
    if not all(bool(torch.isfinite(t).all()) for t in avg.model.state_dict().values() if t.is_floating_point()):
        raise DataError(f"the average of {len(avg.sources)} models is not finite: a source's weights diverged "
                        f"({', '.join(str(s.path) for s in avg.sources[:3])})")
    trained = TrainConfig.from_checkpoint(avg.meta, paths[0])
    fold = opts.data_fold or trained_fold(avg.meta)
    trained_on = {s.fold for s in avg.sources} - {None}
    if opts.data_fold and len(trained_on) == 1 and opts.data_fold not in trained_on:
        raise UserError(f"--data-fold {opts.data_fold}: the models were trained on {trained_on.pop()} (the average "
                        "would be labelled with another fold, and its out-of-fold score would include images it "
                        "trained on); leave out --data-fold")
    if fold is None:
        raise UserError(f"{paths[0]} does not record its fold; give --data-fold")
    data_dir = opts.data_dir or trained.data.data_dir
    folds_file = opts.folds_file if opts.folds_file is not None else trained.data.folds_file
    drop = opts.drop_mask_threshold if opts.drop_mask_threshold is not None else trained.data.drop_mask_threshold
    train = kaggle.load_train(data_dir, cache=not opts.no_cache, workers=opts.decode_threads or None)
    fingerprint = train.fingerprint()
    kaggle.check_fingerprint(paths[0], avg.meta.get("data_fingerprint"), fingerprint, data_dir,
                             "BatchNorm must be recomputed on the images the models trained on")
    tr, _ = folds.training_rows(train.ids, train.masks, fold, folds_file, drop)
    batch = opts.batch_size or trained.optim.batch_size
    batches = update_bn(avg.model, avg.input_spec, train.images[tr], device, batch, opts.amp)
    epochs = [s.epoch for s in avg.sources]
    config = trained.replace(data_dir=str(data_dir), data_fold=fold, folds_file=folds_file,
                             drop_mask_threshold=drop).to_dict()
    out_meta = {
        "kind": "swa", "epoch": max((e for e in epochs if isinstance(e, int)), default=None),
        "sources": [str(s.path) for s in avg.sources], "source_epochs": epochs,
        "duplicates": [[str(a), str(b)] for a, b in avg.skipped],
        "bn_images": int(len(tr)), "bn_batch_size": batch, "bn_batches": batches,
        "config": config, "data_fingerprint": fingerprint,
        "pseudo_labels": avg.meta.get("pseudo_labels"),  # which pseudo-labels the averaged models trained with
    }
    remove_stale_temporaries(Path(opts.output).parent, [Path(opts.output).name])  # left by a killed swa.py
    models.save_checkpoint(opts.output, avg.model, avg.input_spec, out_meta)
    spec = avg.input_spec
    log(f"wrote {opts.output}: average of {len(avg.sources)} models (epochs {', '.join(map(str, epochs))})"
        f"{f', {len(avg.skipped)} duplicates skipped' if avg.skipped else ''}; BatchNorm recomputed on "
        f"{len(tr)} training images of {fold} ({spec.mode} {spec.source}->{spec.size}, "
        f"{batches} batches of {batch}) in {time.time() - t0:.1f} s")
    return 0
