"""train.py's command line: every flag, ``--config FILE.yaml`` overrides, validation, and the saved config.

Precedence: built-in defaults < keys of ``--config FILE.yaml`` < flags given on the command line. The resolved
configuration is written to ``LOG_DIR/config.yaml``; passing that file back with ``--config`` repeats the run.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path

import yaml

from tgs.errors import UserError
from tgs.io import atomic_open
from tgs.schedulers import NAMES as SCHEDULERS

RECIPE = """the 9th-place recipe (2 GPUs):
  torchrun --nproc_per_node=2 train.py --vtf --pretrained imagenet --loss-on-center --batch-size 32 \\
      --optim adamw --learning-rate 5e-4 --lr-scheduler noam --basenet senet154 --max-epochs 250 \\
      --data-fold fold0 --log-dir runs/fold0 --resume runs/fold0/checkpoints/last-checkpoint-fold0.pth
(offline, --pretrained takes a local weights file, e.g. senet154-c7b49a05.pth, or none)"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", description="Train one fold of the TGS salt UNet.", epilog=RECIPE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="YAML file whose keys (flag names with _ or -) override the defaults")

    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default="data", help="dataset in Kaggle's layout")
    g.add_argument("--data-fold", default="fold0", help="fold0..fold9 (10 consecutive chunks) or e.g. fold01")
    g.add_argument("--folds-file", help="CSV id,fold (python -m datasets.folds) replacing the consecutive chunks")
    g.add_argument("--resize", action="store_true", help="resize 101 -> input size instead of reflect-padding")
    g.add_argument("--input-size", type=int, default=128, help="model input side (pad or resize target)")
    g.add_argument("--disable-cutout", action="store_true", help="no cutout augmentation")
    g.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    g.add_argument("--drop-mask-threshold", type=int, default=0,
                   help="drop training images whose mask has 1..N-1 salt pixels (tiny, doubtful labels)")
    g.add_argument("--dataload-workers-nums", type=int, default=2, help="DataLoader worker processes")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the decoded-PNG cache")

    g = p.add_argument_group("model")
    g.add_argument("--basenet", default="senet154",
                   help="encoder: a timm model, a recipe alias (senet154, se_resnext50_32x4d, ...), unet, unet_nopool")
    g.add_argument("--pretrained", default="none", help="imagenet (timm), a local weights file, or none")
    g.add_argument("--input-upsample", type=int, default=2, help="up-sample the input before the encoder (recipe: 2)")
    g.add_argument("--oc", choices=("both", "center", "decoder", "none"), default="both",
                   help="object-context blocks in the centre and/or decoder blocks")
    g.add_argument("--scse", action="store_true", help="scSE attention in decoder blocks")
    g.add_argument("--skip", choices=("concat", "add", "max", "none"), default="concat", help="skip fusion")
    g.add_argument("--center-channels", type=int, default=256)
    g.add_argument("--decoder-channels", type=int, default=64)
    g.add_argument("--encoder-width", type=int, default=64, help="base width of the from-scratch encoders")
    g.add_argument("--dropout", type=float, default=0.5)
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP")

    g = p.add_argument_group("loss")
    g.add_argument("--loss", default="deep",
                   help="deep (the recipe), lovasz, symmetric_lovasz, bce, dice, bce+dice, "
                        "or weighted: lovasz:0.7,bce:0.15,dice:0.15")
    g.add_argument("--image-loss-weight", type=float, default=0.05, help="deep: weight of the image-level BCE")
    g.add_argument("--aux-loss-weight", type=float, default=0.1, help="deep: weight of each deep-supervision Lovasz")
    g.add_argument("--final-loss-weight", type=float, default=1.0, help="deep: weight of the final Lovasz")
    g.add_argument("--loss-on-center", action="store_true", help="loss on the central 101x101 only (pad mode)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=32, help="per process")
    g.add_argument("--val-batch-size", type=int, default=0, help="0: same as --batch-size")
    g.add_argument("--optim", choices=("sgd", "adam", "adamw"), default="adamw")
    g.add_argument("--learning-rate", type=float, default=5e-4)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--momentum", type=float, default=0.9, help="sgd")
    g.add_argument("--gradient-accumulation", type=int, default=1, help="batches per optimizer step")
    g.add_argument("--lr-scheduler", choices=SCHEDULERS, default="noam")
    g.add_argument("--warmup-epochs", type=int, default=10, help="noam warm-up w")
    g.add_argument("--cycle-epochs", type=int, default=50, help="cos: epochs per restart cycle (a snapshot each)")
    g.add_argument("--min-lr", type=float, default=1e-6, help="cos/clr floor, plateau minimum")
    g.add_argument("--step-epochs", type=int, default=30, help="step: epochs between decays; clr: half cycle")
    g.add_argument("--gamma", type=float, default=0.1, help="step: decay factor")
    g.add_argument("--plateau-patience", type=int, default=10)
    g.add_argument("--plateau-factor", type=float, default=0.5)
    g.add_argument("--max-epochs", type=int, default=250)
    g.add_argument("--early-stopping", type=int, default=0, help="stop after N epochs without a better metric (0: off)")

    g = p.add_argument_group("run")
    g.add_argument("--log-dir", default="runs/fold0", help="metrics, TensorBoard, checkpoints/ and models/")
    g.add_argument("--resume", help="a checkpoints/*-checkpoint-*.pth to continue exactly")
    g.add_argument("--vtf", action="store_true", help="validate with horizontal-flip TTA")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="mixed precision")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--comment", default="", help="free text kept in config.yaml and checkpoints")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


# Keys of the saved config that do not affect the training itself, and are not re-applied by --config.
NOT_REPEATED = ("config", "resume")


def parse(argv=None) -> argparse.Namespace:
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        overrides = load_config(first.config, parser)
        parser.set_defaults(**overrides)
    args = parser.parse_args(argv)
    validate(args)
    return args


def load_config(path: str, parser: argparse.ArgumentParser) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    known = {a.dest for a in parser._actions if a.dest != "help"}
    out = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest in NOT_REPEATED:
            continue
        if dest not in known:
            close = difflib.get_close_matches(dest, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UserError(f"--config {path}: unknown option {key!r}{hint}")
        out[dest] = value
    return out


def validate(a: argparse.Namespace) -> None:
    if a.loss_on_center and a.resize:
        raise UserError("--loss-on-center needs reflect padding: it cannot be used with --resize")
    for name in ("batch_size", "max_epochs", "gradient_accumulation", "input_size"):
        if getattr(a, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    if a.learning_rate <= 0:
        raise UserError(f"--learning-rate must be > 0, got {a.learning_rate}")
    if a.dataload_workers_nums < 0:
        raise UserError("--dataload-workers-nums must be >= 0")
    if a.early_stopping < 0 or a.drop_mask_threshold < 0:
        raise UserError("--early-stopping and --drop-mask-threshold must be >= 0")
    if a.resume and not Path(a.resume).is_file():
        raise UserError(f"--resume {a.resume} does not exist (a missing resume file never starts a fresh run)")


def save_config(args: argparse.Namespace, path: str | Path) -> None:
    data = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_REPEATED}
    with atomic_open(path, "w") as fh:
        fh.write("# resolved configuration of this run; `python train.py --config THIS_FILE` repeats it\n")
        yaml.safe_dump(data, fh, sort_keys=True)
