"""Training one fold: data, model, loss, optimiser and schedule from train.py's options; one function per phase.

Files under ``LOG_DIR``:

- ``config.yaml``: the resolved options (``train.py --config LOG_DIR/config.yaml`` repeats the run);
- ``metrics.csv`` and TensorBoard event files: one row / scalar set per epoch, a grid of validation predictions;
- ``checkpoints/{last,best-metric,best-loss,best-accuracy}-checkpoint-FOLD.pth``: full resume state (model,
  optimiser, scheduler, grad scaler, epoch, step, best values, RNG states);
- ``models/{last,best-metric,best-loss,best-accuracy}-FOLD.pth`` (and ``snapshot-eNNN-FOLD.pth`` at the end of each
  cosine cycle): model-only checkpoints for swa.py and test.py.

Every file is written atomically by rank 0 only. Validation shards the fold's images over the ranks without
padding and gathers per-image counts, so each image is scored exactly once and the metric equals a single-process
run's.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import operator
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler

import models
from datasets import augment, folds, kaggle
from datasets.torchdata import SaltDataset
from losses import build_loss
from tgs import distributed, metric, options, predict, runtime, schedulers
from tgs.errors import UserError
from tgs.inputs import InputSpec
from tgs.io import atomic_open

KINDS = {"metric": operator.gt, "loss": operator.lt, "accuracy": operator.gt}  # "better than the best so far"


class TrainingError(UserError):
    """The run cannot go on (e.g. the loss became NaN); the last good checkpoint is intact."""


@dataclass
class RunState:
    """Everything about the run's progress that a resume must restore."""

    epoch: int = -1  # last finished epoch
    step: int = 0  # optimiser steps so far
    best: dict = field(default_factory=lambda: {"metric": -math.inf, "loss": math.inf, "accuracy": -math.inf})
    best_epoch: dict = field(default_factory=lambda: {"metric": -1, "loss": -1, "accuracy": -1})
    since_best_metric: int = 0
    history: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "best": dict(self.best), "best_epoch": dict(self.best_epoch),
                "since_best_metric": self.since_best_metric, "history": list(self.history)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunState":
        return cls(int(d["epoch"]), int(d["step"]), dict(d["best"]), dict(d["best_epoch"]),
                   int(d["since_best_metric"]), list(d["history"]))


@dataclass
class Context:
    args: argparse.Namespace
    info: distributed.DistInfo
    spec: InputSpec
    model: torch.nn.Module  # possibly DDP / compiled
    core: torch.nn.Module  # the plain model (for saving)
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    train_set: SaltDataset
    train_loader: DataLoader
    train_sampler: DistributedSampler
    valid_images: np.ndarray
    valid_masks: np.ndarray
    log_dir: Path
    fold: str
    state: RunState
    writer: object = None


# -- setup ----------------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def model_config(args: argparse.Namespace, pretrained: bool = True) -> models.ModelConfig:
    weights = None if (not pretrained or args.pretrained in (None, "", "none")) else args.pretrained
    return models.ModelConfig(
        encoder=args.basenet, pretrained=weights, input_upsample=args.input_upsample,
        center_channels=args.center_channels, decoder_channels=args.decoder_channels,
        oc_center=args.oc in ("both", "center"), oc_decoder=args.oc in ("both", "decoder"),
        scse=args.scse, skip=args.skip, dropout=args.dropout, encoder_width=args.encoder_width)


def input_spec(args: argparse.Namespace) -> InputSpec:
    return InputSpec(mode="resize" if args.resize else "pad", size=args.input_size)


def split_data(args: argparse.Namespace):
    """The training set and the fold's (train, valid) row indices, tiny masks dropped from training."""
    train = kaggle.load_train(args.data_dir, cache=not args.no_cache, workers=None)
    tr, va = folds.split(train.ids, args.data_fold, args.folds_file)
    if args.drop_mask_threshold > 0:
        area = train.masks[tr].reshape(len(tr), -1).sum(axis=1)
        tr = tr[(area == 0) | (area >= args.drop_mask_threshold)]
    if len(tr) == 0 or len(va) == 0:
        raise UserError(f"--data-fold {args.data_fold}: {len(tr)} training and {len(va)} validation images; "
                        "both must be non-empty")
    return train, tr, va


def build_optimizer(args, params) -> torch.optim.Optimizer:
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.optim == "adam":
        return torch.optim.Adam(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    return torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)


def build_criterion(args):
    kwargs = {}
    if "deep" in args.loss:
        kwargs = dict(image_weight=args.image_loss_weight, aux_weight=args.aux_loss_weight,
                      final_weight=args.final_loss_weight)
    return build_loss(args.loss, **kwargs)


def setup(args: argparse.Namespace, info: distributed.DistInfo) -> Context:
    runtime.setup_cpu(args.threads)
    seed_everything(args.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.sync_bn and info.device.type != "cuda":
        raise UserError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on the CPU)")
    spec = input_spec(args)
    criterion = build_criterion(args)
    resume = models.read_checkpoint(args.resume) if args.resume else None
    if resume is not None and resume.get("extra") is None:
        raise UserError(f"--resume {args.resume} is a model file without training state; resume from a "
                        "checkpoints/*-checkpoint-*.pth file")

    train, tr, va = split_data(args)
    core = models.build_model(model_config(args, pretrained=resume is None))
    if resume is not None:
        if resume["meta"].get("fold") not in (None, args.data_fold):
            raise UserError(f"--resume {args.resume} is from {resume['meta']['fold']}, not --data-fold "
                            f"{args.data_fold}")
        try:
            core.load_state_dict(resume["state_dict"])
        except RuntimeError as exc:
            raise UserError(f"--resume {args.resume} does not fit the model of these options: "
                            f"{str(exc).splitlines()[0]}") from None
    core.to(info.device)
    if args.channels_last:
        core.to(memory_format=torch.channels_last)
    model = core
    if info.enabled:
        if args.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            core = model
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)

    optimizer = build_optimizer(args, core.parameters())
    scheduler = schedulers.build(args.lr_scheduler, optimizer, base_lr=args.learning_rate, warmup=args.warmup_epochs,
                                 cycle=args.cycle_epochs, min_lr=args.min_lr, step_epochs=args.step_epochs,
                                 gamma=args.gamma, patience=args.plateau_patience, factor=args.plateau_factor)
    scaler = torch.amp.GradScaler(info.device.type, enabled=args.amp == "fp16")

    transform = None if args.no_augment else augment.recipe(mean=float(train.images[tr].mean()),
                                                            cutout=not args.disable_cutout)
    train_set = SaltDataset(train.images[tr], train.masks[tr], transform, seed=args.seed)
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=args.seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                        num_workers=args.dataload_workers_nums, pin_memory=info.device.type == "cuda",
                        drop_last=len(train_set) // info.world_size > args.batch_size)

    state = RunState()
    if resume is not None:
        extra = resume["extra"]
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        if extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        state = RunState.from_dict(extra["state"])
        torch.set_rng_state(extra["rng"]["torch"])
        if info.device.type == "cuda" and extra["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(extra["rng"]["cuda"][0], info.device)

    log_dir = Path(args.log_dir)
    ctx = Context(args, info, spec, model, core, criterion, optimizer, scheduler, scaler, train_set, loader, sampler,
                  train.images[va], train.masks[va], log_dir, args.data_fold, state)
    if info.is_main:
        (log_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (log_dir / "models").mkdir(parents=True, exist_ok=True)
        options.save_config(args, log_dir / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        ctx.writer = SummaryWriter(log_dir=str(log_dir))
    print_main(info, f"fold {args.data_fold}: {len(tr)} training, {len(va)} validation images; "
                     f"{spec.mode} {spec.source}->{spec.size}; {args.basenet}; device {info.device}"
                     f"{f' x{info.world_size} processes' if info.enabled else ''}"
                     f"{f'; resuming after epoch {state.epoch}' if resume is not None else ''}")
    return ctx


def print_main(info: distributed.DistInfo, text: str) -> None:
    if info.is_main:
        print(text, flush=True)


def progress(iterable, info, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, disable=not (info.is_main and sys.stderr.isatty()), leave=False, dynamic_ncols=True,
                **kwargs)


# -- one epoch ------------------------------------------------------------------------------------------------------
def to_model_targets(ctx: Context, out: dict, masks: torch.Tensor):
    if ctx.args.loss_on_center:  # pad mode: outputs cropped to the image's 101x101, where the masks already are
        return predict.crop_to_source(out, ctx.spec), (masks > 0).float()
    return out, ctx.spec.encode_masks(masks)


def train_step(ctx: Context, images: torch.Tensor, masks: torch.Tensor, stepping: bool = True,
               where: str = "") -> torch.Tensor:
    """Forward and backward of one batch (uint8 images and bool masks (B, 1, 101, 101) on the device), then an
    optimiser step when ``stepping`` (else the gradients accumulate, without a DDP all-reduce). Returns the
    batch's loss, detached. A non-finite loss on any rank stops training with a TrainingError naming ``where``."""
    args, info = ctx.args, ctx.info
    x = ctx.spec.encode_images(images)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    skip_sync = info.enabled and not stepping and hasattr(ctx.model, "no_sync")
    with ctx.model.no_sync() if skip_sync else contextlib.nullcontext():  # all-reduce only when stepping
        with predict.autocast(info.device, args.amp):
            out = ctx.model(x)
        out, y = to_model_targets(ctx, out, masks)
        loss = ctx.criterion(out, y)
        if not distributed.all_true(bool(torch.isfinite(loss.detach())), info):
            raise TrainingError(f"the loss became {loss.item()} at {where}, step {ctx.state.step}; "
                                f"stopped (the last good checkpoint in {ctx.log_dir / 'checkpoints'} is intact)")
        ctx.scaler.scale(loss / args.gradient_accumulation).backward()
    if stepping:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.state.step += 1
    return loss.detach()


def train_one_epoch(ctx: Context, epoch: int) -> dict:
    args, info = ctx.args, ctx.info
    ctx.model.train()
    ctx.train_sampler.set_epoch(epoch)
    ctx.train_set.set_epoch(epoch)
    accum = args.gradient_accumulation
    total, count = torch.zeros((), dtype=torch.float64), 0
    n_batches = len(ctx.train_loader)
    ctx.optimizer.zero_grad(set_to_none=True)
    bar = progress(ctx.train_loader, info, desc=f"train {epoch}")
    for i, (images, masks, _) in enumerate(bar):
        images = images.to(info.device, non_blocking=True)
        masks = masks.to(info.device, non_blocking=True)
        stepping = (i + 1) % accum == 0 or i + 1 == n_batches
        loss = train_step(ctx, images, masks, stepping, where=f"epoch {epoch}, batch {i}")
        total += loss.double().cpu() * len(images)
        count += len(images)
        if bar.disable is False:
            bar.set_postfix(loss=f"{(total / max(count, 1)).item():.4f}")
    sums = distributed.all_gather_objects((float(total), count), info)
    return {"train_loss": sum(s for s, _ in sums) / max(1, sum(c for _, c in sums))}


@torch.no_grad()
def evaluate(ctx: Context, epoch: int) -> dict:
    """Validation loss, competition metric and pixel accuracy on the fold's images, at 101x101."""
    args, info = ctx.args, ctx.info
    ctx.model.eval()
    shard = np.arange(info.rank, len(ctx.valid_images), info.world_size)  # each image on exactly one rank
    bs = args.val_batch_size or args.batch_size
    batches = predict.batches([ctx.valid_images[shard], ctx.valid_masks[shard]], bs, info.device)
    evaluator, loss_sum, correct = metric.SaltEvaluator(), 0.0, 0
    grid = None
    for _, (images, masks) in progress(batches, info, desc=f"valid {epoch}", total=math.ceil(len(shard) / bs)):
        pred = predict.forward(ctx.model, ctx.spec, images, tta=args.vtf, amp=args.amp,
                               channels_last=args.channels_last)
        out, y = to_model_targets(ctx, pred.outputs, masks)
        loss_sum += float(ctx.criterion(out, y)) * len(images)
        hard = (pred.probs > 0.5)[:, 0].cpu().numpy()
        truth = masks[:, 0].cpu().numpy()
        evaluator.process(hard, truth)
        correct += int((hard == truth).sum())
        if grid is None:
            grid = (images[:8].float().cpu() / 255, masks[:8].float().cpu(), pred.probs[:8].cpu())
    local = (shard, *evaluator.counts(), loss_sum, correct)
    parts = distributed.all_gather_objects(local, info)
    order = np.argsort(np.concatenate([p[0] for p in parts]))
    rep = metric.summarize(np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order],
                           np.concatenate([p[3] for p in parts])[order])
    n = len(ctx.valid_images)
    return {"val_loss": sum(p[4] for p in parts) / n, "val_metric": rep.score,
            "val_accuracy": sum(p[5] for p in parts) / (n * ctx.spec.source ** 2),
            "val_empty_score": rep.empty_score, "val_salt_score": rep.nonempty_score, "_grid": grid}


# -- saving ---------------------------------------------------------------------------------------------------------
def resume_state(ctx: Context) -> dict:
    rng = {"torch": torch.get_rng_state(),
           "cuda": [torch.cuda.get_rng_state(ctx.info.device)] if ctx.info.device.type == "cuda" else None}
    return {"optimizer": ctx.optimizer.state_dict(), "scheduler": ctx.scheduler.state_dict(),
            "scaler": ctx.scaler.state_dict() if ctx.scaler.is_enabled() else None, "state": ctx.state.to_dict(),
            "rng": rng}


def save(ctx: Context, epoch: int, row: dict, improved: list[str], snapshot: bool) -> None:
    fold = ctx.fold
    meta = {"fold": fold, "epoch": epoch, "metrics": {k: v for k, v in row.items() if not k.startswith("_")},
            "data_dir": str(ctx.args.data_dir), "folds_file": ctx.args.folds_file,
            "drop_mask_threshold": ctx.args.drop_mask_threshold, "comment": ctx.args.comment,
            "options": {k: v for k, v in vars(ctx.args).items() if k not in options.NOT_REPEATED}}
    extra = resume_state(ctx)
    ck, md = ctx.log_dir / "checkpoints", ctx.log_dir / "models"
    for kind in ["last", *(f"best-{k}" for k in improved)]:
        models.save_checkpoint(ck / f"{kind}-checkpoint-{fold}.pth", ctx.core, ctx.spec, {**meta, "kind": kind}, extra)
        models.save_checkpoint(md / f"{kind}-{fold}.pth", ctx.core, ctx.spec, {**meta, "kind": kind})
    if snapshot:
        models.save_checkpoint(md / f"snapshot-e{epoch:03d}-{fold}.pth", ctx.core, ctx.spec, {**meta, "kind": "snapshot"})


def write_metrics(ctx: Context) -> None:
    with atomic_open(ctx.log_dir / "metrics.csv", "w", newline="") as fh:
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
    args, info, state = ctx.args, ctx.info, ctx.state
    for epoch in range(state.epoch + 1, args.max_epochs):
        if args.early_stopping and state.since_best_metric >= args.early_stopping:
            print_main(info, f"early stopping: no better metric for {state.since_best_metric} epochs")
            break
        t0 = time.time()
        lr = ctx.optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "lr": lr, **train_one_epoch(ctx, epoch), **evaluate(ctx, epoch)}
        grid = row.pop("_grid")
        row["time_s"] = time.time() - t0
        improved = []
        for kind, better in KINDS.items():
            value = row[f"val_{kind}"]
            if better(value, state.best[kind]):
                state.best[kind], state.best_epoch[kind] = value, epoch
                improved.append(kind)
        state.since_best_metric = 0 if "metric" in improved else state.since_best_metric + 1
        snapshot = schedulers.snapshot_due(ctx.scheduler, epoch)
        schedulers.step(ctx.scheduler, row["val_metric"])
        state.epoch = epoch
        state.history.append(row)
        if info.is_main:
            save(ctx, epoch, row, improved, snapshot)
            write_metrics(ctx)
            log_tensorboard(ctx, row, grid)
            star = " *" if "metric" in improved else ""
            print(f"epoch {epoch:3d}  lr {lr:.2e}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                  f"metric {row['val_metric']:.4f}{star}  accuracy {row['val_accuracy']:.4f}  {row['time_s']:.0f}s",
                  flush=True)
    return state


def run(args: argparse.Namespace) -> int:
    info = distributed.setup(args.device)
    try:
        ctx = setup(args, info)
        state = fit(ctx)
        if ctx.writer is not None:
            ctx.writer.close()
        print_main(info, f"best metric {state.best['metric']:.4f} at epoch {state.best_epoch['metric']}; "
                         f"models in {ctx.log_dir / 'models'}")
        return 0
    finally:
        distributed.cleanup()
