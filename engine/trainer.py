"""Training one fold from a :class:`engine.config.TrainConfig`: one function per phase.

``run(cfg)`` = :func:`setup` (data, model, loss, optimiser, schedule, resume) -> :func:`fit` (per epoch
:func:`train_one_epoch`, :func:`evaluate`, :func:`save_epoch`). The files of the run folder are named by
:class:`engine.layout.RunLayout`; the checkpoint set is written by :class:`engine.saver.CheckpointSaver` (each
state once, best names linked, consistent after a kill at any moment).

Promises:
- a fresh run into a folder that holds a run is refused (``--resume`` it, ``--overwrite`` it, or use another);
- ``--resume`` continues exactly (on the CPU with a fixed seed, bit for bit) and only on the same data and the same
  training-defining options (a data fingerprint, the pseudo-labels' digest and the options are stored in every
  checkpoint);
- with ``--pseudo-labels`` the batches carry pseudo-labelled test images too (:class:`MixedBatchSampler`: a fixed
  share per batch, or a pretraining phase on them alone), weighted in the loss by :func:`batch_loss`; validation is
  always the fold's real images;
- a non-finite training loss, validation loss, output or weight stops the run before anything of that epoch is
  saved: the last finite state stays the last checkpoint;
- every file is written atomically by rank 0 only; validation shards the fold's images over the ranks and gathers
  per-image counts, so the metric equals a single-process run's.
"""
from __future__ import annotations

import contextlib
import math
import operator
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

import models
from datasets import augment, folds, kaggle
from datasets.torchdata import MixedBatchSampler, SaltDataset
from engine import distributed, logs, predict, schedulers
from engine import pseudo as pseudo_labels
from engine.config import RESUMABLE_CHANGES, TrainConfig, save_yaml, trained_fold
from engine.distributed import DistInfo
from engine.layout import RunLayout
from engine.saver import CheckpointSaver
from tgs import metric, runtime
from tgs.errors import UserError, few
from tgs.inputs import InputSpec
from tgs.io import FolderLock, atomic_open, check_output, input_hit, require_file

KINDS = {"metric": operator.gt, "loss": operator.lt, "accuracy": operator.gt}  # "better than the best so far"


class TrainingError(UserError):
    """The run cannot go on (e.g. the loss became NaN); the message says what is left on disk."""


@dataclass
class RunState:
    """Everything about the run's progress that a resume must restore: the last finished epoch, the optimiser
    steps, and each epoch's row (``metrics.csv``). The best values, their epochs and the epochs since the best
    metric are read from the rows, not kept beside them."""

    epoch: int = -1  # last finished epoch
    step: int = 0  # optimiser steps so far
    history: list = field(default_factory=list)

    def bests(self) -> dict[str, tuple[float, int]]:
        """kind -> (best value, the first epoch reaching it; -1 before any): what :data:`KINDS` calls better."""
        out = {kind: (-math.inf if better is operator.gt else math.inf, -1) for kind, better in KINDS.items()}
        for row in self.history:
            for kind, better in KINDS.items():
                if better(row[f"val_{kind}"], out[kind][0]):
                    out[kind] = (row[f"val_{kind}"], row["epoch"])
        return out

    @property
    def best(self) -> dict[str, float]:
        return {kind: value for kind, (value, _) in self.bests().items()}

    @property
    def best_epoch(self) -> dict[str, int]:
        return {kind: epoch for kind, (_, epoch) in self.bests().items()}

    @property
    def since_best_metric(self) -> int:
        """Epochs after the best metric's (all of them when none was better than nothing, e.g. all NaN)."""
        best = self.best_epoch["metric"]
        return sum(1 for row in self.history if row["epoch"] > best)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "history": list(self.history)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        return cls(int(d["epoch"]), int(d["step"]), list(d["history"]))  # best values: read from the history


@dataclass
class Context:
    cfg: TrainConfig
    info: DistInfo
    spec: InputSpec
    model: torch.nn.Module  # possibly DDP / compiled
    core: torch.nn.Module  # the plain model (for saving)
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    train_set: SaltDataset  # the fold's training images, then the pseudo-labelled ones (indices >= n_real)
    train_loader: DataLoader
    train_sampler: DistributedSampler | MixedBatchSampler
    valid_images: np.ndarray
    valid_masks: np.ndarray
    layout: RunLayout
    saver: CheckpointSaver
    state: RunState
    data_fingerprint: str = ""
    writer: object = None
    n_real: int = 0
    pseudo: pseudo_labels.PseudoSet | None = None
    lock: FolderLock | None = None  # the log dir's, held by the main process while the run lasts
    folds_digest: str | None = None  # the folds file's contents when the run started (None: the chunks)

    @property
    def fold(self) -> str:
        return self.cfg.data.data_fold


# -- setup ----------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def input_spec(cfg: TrainConfig) -> InputSpec:
    return InputSpec(mode=cfg.data.mode, size=cfg.data.input_size)


def build_criterion(cfg: TrainConfig):
    return cfg.loss.criterion()


def load_split(cfg: TrainConfig):
    """The training set and the fold's (train, valid) rows (:func:`datasets.folds.training_rows`)."""
    d = cfg.data
    train = kaggle.load_train(d.data_dir, cache=not d.no_cache, workers=None)
    tr, va = folds.training_rows(train.ids, train.masks, d.data_fold, d.folds_file, d.drop_mask_threshold)
    return train, tr, va


def read_resume(cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume from, checked: training state present, same fold."""
    path = cfg.run.resume
    if not path:
        return None
    require_file(path, "--resume ", missing="does not exist (a missing resume file never starts a fresh run)",
                 folder="is a folder: give its checkpoints/last-checkpoint-*.pth file")
    raw = models.read_checkpoint(path)
    if raw.get("extra") is None:
        raise UserError(f"--resume {path} is a model file without training state; resume from a "
                        "checkpoints/*-checkpoint-*.pth file")
    fold = trained_fold(raw["meta"])
    if fold not in (None, cfg.data.data_fold):
        raise UserError(f"--resume {path} is from {fold}, not --data-fold {cfg.data.data_fold}")
    return raw


def check_resume_matches(cfg: TrainConfig, raw: dict, fingerprint: str,
                         pseudo: pseudo_labels.PseudoSet | None = None) -> None:
    """A resumed run goes on only with the same data, the same pseudo-labels and the same training-defining
    options."""
    path = cfg.run.resume
    stored = raw["meta"].get("data_fingerprint")
    if stored is not None and stored != fingerprint:
        raise UserError(f"--resume {path} was trained on other data than {cfg.data.data_dir} (its data fingerprint "
                        f"{stored} is not {fingerprint}); start afresh with --overwrite or use another --log-dir")
    other = pseudo_labels.mismatch(raw["meta"], None if pseudo is None else pseudo.meta())
    if other:
        raise UserError(f"--resume {path}: {other}; resume with the same labels, or start afresh with --overwrite "
                        "or another --log-dir")
    stored, now = raw["meta"].get("folds_digest"), folds.digest(cfg.data.folds_file)
    if stored is not None and stored != now:
        raise UserError(f"--resume {path} was trained on other folds than --folds-file {cfg.data.folds_file} holds "
                        f"now (its folds digest {stored[:12]}... is not {str(now)[:12]}...); start afresh with "
                        "--overwrite or use another --log-dir")
    before = TrainConfig.from_checkpoint(raw["meta"], path)
    diff = before.differences(cfg, ignore=RESUMABLE_CHANGES)
    if diff:
        raise UserError(f"--resume {path} was trained with other options ({few(diff, 3)}); resume with the same "
                        "options, or start afresh with --overwrite or another --log-dir")


def claim_log_dir(cfg: TrainConfig, layout: RunLayout, info: DistInfo) -> FolderLock | None:
    """A fresh run may only start in a folder without a run, or with ``--overwrite`` (which removes the old run's
    files first, so old and new models never mix). The main process holds the folder's lock for the whole run
    (returned), so a second train.py in the same folder, fresh or resuming, is refused."""
    lock = FolderLock(layout.root, "--log-dir") if info.is_main else None
    try:
        _claim(cfg, layout, info)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def run_inputs(cfg: TrainConfig) -> dict:
    """The files a run reads that may lie in its --log-dir (``{flag: path}``): never written over, never removed."""
    return {"--folds-file": cfg.data.folds_file, "--pseudo-labels": cfg.pseudo.pseudo_labels}


def _claim(cfg: TrainConfig, layout: RunLayout, info: DistInfo) -> None:
    if cfg.run.resume and layout.holds_run():  # continuing a run here is fine, writing another one over it is not
        if layout.checkpoints.resolve() not in Path(cfg.run.resume).resolve().parents:
            raise UserError(f"--log-dir {layout.root} already holds another run than --resume {cfg.run.resume} "
                            f"({len(layout.run_files())} files); resume into the checkpoint's own folder, or choose "
                            "a new --log-dir")
    if cfg.run.resume or not layout.holds_run():
        return
    if not cfg.run.overwrite:
        last = sorted(layout.checkpoints.glob("last-checkpoint-*.pth")) if layout.checkpoints.is_dir() else []
        resume = f"--resume {last[0]}" if last else "--resume CHECKPOINT"
        raise UserError(f"--log-dir {layout.root} already holds a run ({len(layout.run_files())} files); continue "
                        f"it with {resume}, start afresh with --overwrite (removes them), or choose a new --log-dir")
    kept = next(filter(None, (input_hit(p, run_inputs(cfg)) for p in layout.run_files())), None)
    if kept is not None:
        raise UserError(f"--overwrite would remove the input {kept[0]} {kept[1]}, which lies in --log-dir "
                        f"{layout.root}: move it out first, or choose another --log-dir")
    if info.is_main:
        for p in layout.run_files():
            p.unlink()
        logs.info(f"--overwrite: removed the previous run's files in {layout.root}")
    distributed.barrier(info)


def announce(ctx: Context, n_valid: int, resumed: bool) -> None:
    """The run's first lines: the fold, the input mode, the model and device, and the pseudo-labels' share."""
    cfg, info, spec, pseudo, p = ctx.cfg, ctx.info, ctx.spec, ctx.pseudo, ctx.cfg.pseudo
    logs.info(f"fold {cfg.data.data_fold}: {ctx.n_real} training, {n_valid} validation images; "
              f"{spec.mode} {spec.source}->{spec.size}; {cfg.model.basenet}; device {info.device}"
              f"{f' x{info.world_size} processes' if info.enabled else ''}"
              f"{f'; resuming after epoch {ctx.state.epoch}' if resumed else ''}")
    if pseudo is not None:
        epochs = f"{p.pseudo_epochs} epoch{'s' if p.pseudo_epochs != 1 else ''}"
        _, real, k = ctx.train_sampler.shape(0)  # a fold smaller than a batch: the batch it fills, the share kept
        how = (f"{k} of every batch of {real + k}, weight {p.pseudo_weight:g}" if p.pseudo_schedule == "mix"
               else f"alone for {epochs}, then the real images alone")
        logs.info(f"pseudo-labels: {len(pseudo)} test images from {pseudo.path}, {how}")


def place_model(cfg: TrainConfig, core: torch.nn.Module, info: DistInfo):
    """(the model to call, its core): on the device, channels-last, SyncBatchNorm, DDP and compiled as asked."""
    core.to(info.device)
    if cfg.run.channels_last:
        core.to(memory_format=torch.channels_last)
    model = core
    if info.enabled:
        if cfg.model.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            core = model
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if cfg.run.compile:
        model = torch.compile(model)
    return model, core


def build_loader(cfg: TrainConfig, train, tr: np.ndarray, pseudo, info: DistInfo):
    """(dataset, sampler, loader) of the fold's training images, with the pseudo-labelled ones when given (the same
    augmentations for both kinds; indices >= len(tr) are pseudo-labelled)."""
    d, p, bs = cfg.data, cfg.pseudo, cfg.optim.batch_size
    transform = None if d.no_augment else augment.recipe(mean=float(train.images[tr].mean()),
                                                         cutout=not d.disable_cutout)
    pin = info.device.type == "cuda"
    if pseudo is None:
        train_set = SaltDataset(train.images[tr], train.masks[tr], transform, seed=cfg.run.seed)
        sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=cfg.run.seed, drop_last=False)
        loader = DataLoader(train_set, batch_size=bs, sampler=sampler, num_workers=d.dataload_workers_nums,
                            pin_memory=pin, drop_last=len(train_set) // info.world_size > bs)
        return train_set, sampler, loader
    train_set = SaltDataset(np.concatenate([train.images[tr], pseudo.images]),
                            np.concatenate([train.masks[tr], pseudo.masks]), transform, seed=cfg.run.seed)
    mixed = p.pseudo_schedule == "mix"
    sampler = MixedBatchSampler(len(tr), len(pseudo), bs, p.per_batch(bs) if mixed else 0,
                                0 if mixed else p.pseudo_epochs, num_replicas=info.world_size, rank=info.rank,
                                seed=cfg.run.seed)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=d.dataload_workers_nums, pin_memory=pin)
    return train_set, sampler, loader


def restore_state(resume: dict | None, optimizer, scheduler, scaler, info: DistInfo) -> RunState:
    """The run's state: fresh, or the resume checkpoint's (optimiser, schedule, grad scaler, RNG states)."""
    if resume is None:
        return RunState()
    extra = resume["extra"]
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])
    torch.set_rng_state(extra["rng"]["torch"])
    if info.device.type == "cuda" and extra["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(extra["rng"]["cuda"][0], info.device)
    return RunState.from_dict(extra["state"])


def start_outputs(ctx: Context, resumed: bool) -> None:
    """The main process's outputs: the checkpoint folder (a resume re-links what a kill left), config.yaml, and
    the TensorBoard writer."""
    ctx.saver.prepare()
    if resumed:
        mended = ctx.saver.restore(ctx.state.epoch, ctx.state.best_epoch, _snapshot_epoch(ctx, ctx.state.epoch))
        if mended:
            logs.info(f"restored {len(mended)} files of epoch {ctx.state.epoch} from its last checkpoint: "
                      f"{few(mended, 3)}")
    save_yaml(ctx.cfg, ctx.layout.config)
    from torch.utils.tensorboard import SummaryWriter

    ctx.writer = SummaryWriter(log_dir=str(ctx.layout.root))


def setup(cfg: TrainConfig, info: DistInfo) -> Context:
    """Everything a run needs, every input checked before the run folder is claimed (a refused run leaves it as it
    was): the model (resumed or fresh), the data and pseudo-labels, the optimiser, schedule and loader."""
    runtime.setup_cpu(cfg.run.threads)
    seed_everything(cfg.run.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.model.sync_bn and info.device.type != "cuda":
        raise UserError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on the CPU)")
    check_output(cfg.run.log_dir, "--log-dir", run_inputs(cfg), [cfg.data.data_dir])
    layout = RunLayout(Path(cfg.run.log_dir), cfg.data.data_fold)
    spec = input_spec(cfg)
    criterion = build_criterion(cfg)
    resume = read_resume(cfg)
    core = models.build_model(cfg.model.model_config(pretrained=resume is None))

    train, tr, va = load_split(cfg)
    fingerprint = train.fingerprint()
    p = cfg.pseudo
    pseudo = None if p.pseudo_labels is None else pseudo_labels.for_training(
        p.pseudo_labels, cfg.data.data_dir, train.ids, cache=not cfg.data.no_cache)
    if resume is not None:
        check_resume_matches(cfg, resume, fingerprint, pseudo)
        try:
            core.load_state_dict(resume["state_dict"])
        except RuntimeError as exc:
            raise UserError(f"--resume {cfg.run.resume} does not fit the model of these options: "
                            f"{str(exc).splitlines()[0]}") from None
    lock = claim_log_dir(cfg, layout, info)  # after every check of the input: a refused run leaves the folder as it was
    model, core = place_model(cfg, core, info)
    optimizer = cfg.optim.optimizer(core.parameters())
    scheduler = cfg.optim.scheduler(optimizer)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg.run.amp == "fp16")
    train_set, sampler, loader = build_loader(cfg, train, tr, pseudo, info)
    state = restore_state(resume, optimizer, scheduler, scaler, info)

    saver = CheckpointSaver(layout)
    ctx = Context(cfg, info, spec, model, core, criterion, optimizer, scheduler, scaler, train_set, loader, sampler,
                  train.images[va], train.masks[va], layout, saver, state, fingerprint, n_real=len(tr), pseudo=pseudo,
                  lock=lock, folds_digest=folds.digest(cfg.data.folds_file))
    if info.is_main:
        start_outputs(ctx, resume is not None)
    announce(ctx, len(va), resume is not None)
    return ctx


def _snapshot_epoch(ctx: Context, epoch: int) -> int | None:
    """``epoch`` when the schedule saves a snapshot at its end (the end of a cosine cycle), else None."""
    if epoch < 0:
        return None
    lam = getattr(ctx.scheduler, "lr_lambdas", [None])[0]
    return epoch if isinstance(lam, schedulers.CosineRestarts) and lam.cycle_ends(epoch) else None


# -- one epoch ------------------------------------------------------------------------------------------------------
def to_model_targets(out: dict, masks: torch.Tensor, spec: InputSpec, loss_on_center: bool):
    if loss_on_center:  # pad mode: outputs cropped to the image's 101x101, where the masks already are
        return predict.crop_to_source(out, spec), (masks > 0).float()
    return out, spec.encode_masks(masks)


class PartsMean:
    """Image-weighted means of named loss parts over an epoch (each part a mean over ``n`` images of a batch), kept
    on the device until the end (no synchronisation per batch)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, parts: dict, n: int) -> None:
        """Parts that are all means over the same ``n`` images."""
        for k, v in parts.items():
            self.add_one(k, v, n)

    def add_one(self, key: str, value: torch.Tensor, n: int) -> None:
        v = value.detach().double() * n
        self.sums[key] = self.sums[key] + v if key in self.sums else v
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def count(self) -> int:
        return self.counts.get("loss", 0)

    def means(self, info: DistInfo, prefix: str) -> dict:
        local = ({k: float(v) for k, v in self.sums.items()}, dict(self.counts))
        gathered = distributed.all_gather_objects(local, info)
        keys = sorted({k for s, _ in gathered for k in s})
        return {f"{prefix}_{k.replace('/', '.')}": sum(s.get(k, 0.0) for s, _ in gathered)
                / max(sum(c.get(k, 0) for _, c in gathered), 1) for k in keys}


def _diverged(what: str, value, ctx: Context, where: str) -> TrainingError:
    return TrainingError(f"the {what} became {value} at {where}, step {ctx.state.step}; stopped "
                         f"({ctx.saver.describe()})")


def take(out, index: torch.Tensor):
    """The images ``index`` of a model output: a tensor, or a dict / list of them (batch first), or None."""
    if isinstance(out, torch.Tensor):
        return out[index]
    if isinstance(out, dict):
        return {k: take(v, index) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(take(v, index) for v in out)
    return out


def batch_loss(criterion, out, y: torch.Tensor, pseudo: torch.Tensor | None = None,
               weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """(loss, parts) of one batch; ``parts``: ``{name: (value, images it is a mean over)}``, detached, with the
    total under ``"loss"``.

    Without pseudo-labelled images (``pseudo`` (B,) bool on the CPU, True for those; None: none) the loss is the
    criterion on the batch. A batch with both kinds gets the weighted mean over its images, weight 1 for a real
    image and ``weight`` W for a pseudo-labelled one: ``(n_r L_r + W n_p L_p) / (n_r + W n_p)`` with ``L_r``,
    ``L_p`` the criterion on each part (and each named part combined the same way; ``real_loss`` and
    ``pseudo_loss`` are added). The recipe's losses are means over images, so this is exact: W = 1 gives the
    criterion on the whole batch, W = 0 the criterion on its real images (the forward pass, BatchNorm included,
    still sees them all). One exception: the deep loss's aux part is a mean over the images with salt, and is
    combined by image counts."""
    n = len(y)
    n_p = 0 if pseudo is None else int(pseudo.sum())
    if n_p in (0, n):
        loss = criterion(out, y)
        parts = {**getattr(criterion, "last_parts", {}), "loss": loss.detach()}
        return loss, {k: (v, n) for k, v in parts.items()}
    real = torch.nonzero(~pseudo).squeeze(1).to(y.device, non_blocking=True)
    fake = torch.nonzero(pseudo).squeeze(1).to(y.device, non_blocking=True)
    w_r, w_p = float(n - n_p), float(weight) * n_p
    halves = []
    for index in (real, fake):
        loss_part = criterion(take(out, index), y[index])
        halves.append((loss_part, {**getattr(criterion, "last_parts", {}), "loss": loss_part.detach()}))
    (loss_r, parts_r), (loss_p, parts_p) = halves
    loss = (w_r * loss_r + w_p * loss_p) / (w_r + w_p)
    parts = {k: ((w_r * parts_r[k] + w_p * parts_p[k]) / (w_r + w_p), n) for k in parts_r}
    parts["real_loss"] = (loss_r.detach(), n - n_p)
    parts["pseudo_loss"] = (loss_p.detach(), n_p)
    return loss, parts


def train_step(ctx: Context, images: torch.Tensor, masks: torch.Tensor, stepping: bool = True,
               where: str = "", pseudo: torch.Tensor | None = None) -> dict:
    """Forward and backward of one batch (uint8 images and bool masks (B, 1, 101, 101) on the device; ``pseudo``
    (B,) bool on the CPU marks pseudo-labelled images), then an optimiser step when ``stepping`` (else the
    gradients accumulate, without a DDP all-reduce). Returns the batch's loss parts (:func:`batch_loss`). A
    non-finite loss on any rank stops training with a TrainingError naming ``where``."""
    cfg, info = ctx.cfg, ctx.info
    x = ctx.spec.encode_images(images)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    skip_sync = info.enabled and not stepping and hasattr(ctx.model, "no_sync")
    with ctx.model.no_sync() if skip_sync else contextlib.nullcontext():  # all-reduce only when stepping
        with predict.autocast(info.device, cfg.run.amp):
            out = ctx.model(x)
        out, y = to_model_targets(out, masks, ctx.spec, cfg.loss.loss_on_center)
        loss, parts = batch_loss(ctx.criterion, out, y, pseudo, cfg.pseudo.pseudo_weight)
        if not distributed.all_true(bool(torch.isfinite(loss.detach())), info):
            raise _diverged("loss", loss.item(), ctx, where)
        ctx.scaler.scale(loss / cfg.optim.gradient_accumulation).backward()
    if stepping:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.state.step += 1
    return parts


def train_one_epoch(ctx: Context, epoch: int) -> dict:
    info = ctx.info
    ctx.model.train()
    ctx.train_sampler.set_epoch(epoch)
    ctx.train_set.set_epoch(epoch)
    accum = ctx.cfg.optim.gradient_accumulation
    parts = PartsMean()
    n_batches = len(ctx.train_loader)
    ctx.optimizer.zero_grad(set_to_none=True)
    bar = logs.progress(ctx.train_loader, info, desc=f"train {epoch}", total=n_batches)
    for i, (images, masks, index) in enumerate(bar):
        pseudo = None if ctx.pseudo is None else index >= ctx.n_real
        images = images.to(info.device, non_blocking=True)
        masks = masks.to(info.device, non_blocking=True)
        stepping = (i + 1) % accum == 0 or i + 1 == n_batches
        step = train_step(ctx, images, masks, stepping, where=f"epoch {epoch}, batch {i}", pseudo=pseudo)
        for name, (value, n) in step.items():
            parts.add_one(name, value, n)
        if not bar.disable:
            bar.set_postfix(loss=f"{float(parts.sums['loss']) / max(parts.count, 1):.4f}")
    out = parts.means(info, "train")
    return {"train_loss": out.pop("train_loss"), **out}


@torch.no_grad()
def evaluate(ctx: Context, epoch: int) -> dict:
    """Validation loss, competition metric and pixel accuracy on the fold's images, at 101x101."""
    cfg, info = ctx.cfg, ctx.info
    ctx.model.eval()
    shard = np.arange(info.rank, len(ctx.valid_images), info.world_size)  # each image on exactly one rank
    bs = cfg.optim.val_batch_size or cfg.optim.batch_size
    batches = predict.batches([ctx.valid_images[shard], ctx.valid_masks[shard]], bs, info.device)
    evaluator, parts, correct, finite = metric.SaltEvaluator(), PartsMean(), 0, True
    grid = None
    for _, (images, masks) in logs.progress(batches, info, desc=f"valid {epoch}", total=math.ceil(len(shard) / bs)):
        pred = predict.forward(ctx.model, ctx.spec, images, tta=cfg.run.vtf, amp=cfg.run.amp,
                               channels_last=cfg.run.channels_last)
        finite &= bool(torch.isfinite(pred.probs).all())
        out, y = to_model_targets(pred.outputs, masks, ctx.spec, cfg.loss.loss_on_center)
        loss = ctx.criterion(out, y)
        parts.add({**getattr(ctx.criterion, "last_parts", {}), "loss": loss}, len(images))
        hard = (pred.probs > 0.5)[:, 0].cpu().numpy()
        truth = masks[:, 0].cpu().numpy()
        evaluator.process(hard, truth)
        correct += int((hard == truth).sum())
        if grid is None:
            grid = (images[:8].float().cpu() / 255, masks[:8].float().cpu(), pred.probs[:8].cpu())
    if not distributed.all_true(finite, info):
        raise _diverged("validation output", "non-finite", ctx, f"epoch {epoch}")
    local = (shard, *evaluator.counts(), correct)
    gathered = distributed.all_gather_objects(local, info)
    order = np.argsort(np.concatenate([p[0] for p in gathered]))
    rep = metric.summarize(*(np.concatenate([p[i] for p in gathered])[order] for i in (1, 2, 3)))
    n = len(ctx.valid_images)
    losses = parts.means(info, "val")
    if not math.isfinite(losses["val_loss"]):
        raise _diverged("validation loss", losses["val_loss"], ctx, f"epoch {epoch}")
    return {"val_loss": losses.pop("val_loss"), "val_metric": rep.score,
            "val_accuracy": sum(p[4] for p in gathered) / (n * ctx.spec.source ** 2),
            "val_empty_score": rep.empty_score, "val_salt_score": rep.nonempty_score, **losses, "_grid": grid}


# -- saving ---------------------------------------------------------------------------------------------------------
def resume_state(ctx: Context) -> dict:
    rng = {"torch": torch.get_rng_state(),
           "cuda": [torch.cuda.get_rng_state(ctx.info.device)] if ctx.info.device.type == "cuda" else None}
    return {"optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict(),
            "scaler": ctx.scaler.state_dict() if ctx.scaler.is_enabled() else None, "state": ctx.state.to_dict(),
            "rng": rng}


def weights_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


def save_epoch(ctx: Context, epoch: int, row: dict, improved: list[str]) -> None:
    meta = {"epoch": epoch, "metrics": {k: v for k, v in row.items() if not k.startswith("_")},
            "config": ctx.cfg.to_dict(), "data_fingerprint": ctx.data_fingerprint,
            "folds_digest": ctx.folds_digest}
    if ctx.pseudo is not None:
        meta["pseudo_labels"] = ctx.pseudo.meta()
    ctx.saver.save(ctx.core, ctx.spec, meta, resume_state(ctx), improved, _snapshot_epoch(ctx, epoch))


def write_metrics(ctx: Context) -> None:
    with atomic_open(ctx.layout.metrics, "w", newline="") as fh:
        pd.DataFrame(ctx.state.history).to_csv(fh, index=False, float_format="%.6g")


def log_tensorboard(ctx: Context, row: dict, grid) -> None:
    w = ctx.writer
    if w is None:
        return
    e = row["epoch"]
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v):
            w.add_scalar(k.replace("_", "/", 1), v, e)
    if grid is not None:
        image, truth, prob = grid
        w.add_images("valid/image", image, e)
        w.add_images("valid/truth", truth, e)
        w.add_images("valid/probability", prob, e)
    w.flush()


# -- the run --------------------------------------------------------------------------------------------------------
def fit(ctx: Context) -> RunState:
    cfg, info, state = ctx.cfg, ctx.info, ctx.state
    for epoch in range(state.epoch + 1, cfg.optim.max_epochs):
        if cfg.optim.early_stopping and state.since_best_metric >= cfg.optim.early_stopping:
            logs.info(f"early stopping: no better metric for {state.since_best_metric} epochs", info)
            break
        t0 = time.time()
        lr = ctx.optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "lr": lr, **train_one_epoch(ctx, epoch), **evaluate(ctx, epoch)}
        grid = row.pop("_grid")
        if not distributed.all_true(weights_finite(ctx.core), info):
            raise _diverged("model's weights", "non-finite", ctx, f"epoch {epoch}")
        row["time_s"] = time.time() - t0
        schedulers.step(ctx.scheduler, row["val_metric"])
        state.epoch = epoch
        state.history.append(row)
        improved = [kind for kind, best in state.best_epoch.items() if best == epoch]
        if info.is_main:
            save_epoch(ctx, epoch, row, improved)
            write_metrics(ctx)
            log_tensorboard(ctx, row, grid)
            star = " *" if "metric" in improved else ""
            logs.info(f"epoch {epoch:3d}  lr {lr:.2e}  train loss {row['train_loss']:.4f}  val loss "
                      f"{row['val_loss']:.4f}  metric {row['val_metric']:.4f}{star}  accuracy "
                      f"{row['val_accuracy']:.4f}  {row['time_s']:.0f}s")
    return state


def run(cfg: TrainConfig) -> int:
    info = distributed.setup(cfg.run.device)
    logs.set_rank(info.rank)
    ctx = None
    try:
        ctx = setup(cfg, info)
        state = fit(ctx)
        if ctx.writer is not None:
            ctx.writer.close()
        logs.info(f"best metric {state.best['metric']:.4f} at epoch {state.best_epoch['metric']}; "
                  f"models in {ctx.layout.models}")
        distributed.barrier(info)  # no rank tears its process group down while another still works
        return 0
    finally:
        if ctx is not None and ctx.lock is not None:
            ctx.lock.release()
        distributed.cleanup()
