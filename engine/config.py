"""The typed configuration of a training run: six sections (data, model, loss, optimisation, pseudo-labels, run),
each a frozen dataclass whose fields describe themselves (kind, choices, range, help).

One description serves every source: ``cli/train.py`` builds its argument parser from it, and every value, from
a flag, from a ``--config FILE.yaml`` key or from a checkpoint, passes the same :func:`coerce` (type, choices,
range) and the same cross-field checks, with the same one-line error naming the flag, or the key and the file.
The library (``engine.trainer``) takes a :class:`TrainConfig`, never an ``argparse.Namespace``.

Precedence: built-in defaults < keys of ``--config FILE.yaml`` < flags given on the command line. The resolved
configuration (:meth:`TrainConfig.to_dict`, flat: one key per option) is written to ``LOG_DIR/config.yaml`` and
into every checkpoint's meta (``meta["config"]``); ``python train.py --config LOG_DIR/config.yaml`` repeats the
run, and :meth:`TrainConfig.from_checkpoint` reads the options of the run a checkpoint came from.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from engine import optimizers, schedulers
from losses import LOSSES
from tgs.errors import UserError, excerpt
from tgs.inputs import INPUT_MODES, InputSpec
from tgs.io import atomic_open, read_config_text, require_file
from tgs.options import DATA_DIR, SEED, Declared, Option, opt
from tgs.registry import Registry

RECIPE = """the 9th-place recipe (2 GPUs):
  torchrun --nproc_per_node=2 train.py --vtf --pretrained imagenet --loss-on-center --batch-size 32 \\
      --optim adamw --learning-rate 5e-4 --lr-scheduler noam --basenet senet154 --max-epochs 250 \\
      --data-fold fold0 --log-dir runs/fold0 --resume runs/fold0/checkpoints/last-checkpoint-fold0.pth
(offline, --pretrained takes a local weights file, e.g. senet154-c7b49a05.pth, or none)"""

AMP = ("none", "bf16", "fp16")
OC = ("both", "center", "decoder", "none")
SKIP = ("concat", "add", "max", "none")
PSEUDO_SCHEDULES = ("mix", "pretrain")



def _fold_name(value: str) -> str | None:
    from datasets.folds import fold_problem

    return fold_problem(value)


def size_flag(mode: str) -> str:
    """ensemble.py's flag of an input mode's model input size (``--pad-size``), one per registered mode."""
    return f"--{mode.replace('_', '-')}-size"


_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _device(value: str) -> str | None:
    return None if _DEVICE.match(value) else "is not a device: use auto, cpu, cuda or cuda:N"


def _loss_spec(value: str) -> str | None:
    from losses import parse_spec

    try:
        parse_spec(value)
    except UserError as exc:
        return f"is not a loss ({exc})"
    return None


def _weights(value: str) -> str | None:
    if value in ("none", "imagenet") or Path(value).is_file():
        return None
    return "is not a file (give imagenet, none, or a local weights file)"


# -- the sections -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataOptions:
    data_dir: str = opt("data", DATA_DIR)
    data_fold: str = opt("fold0", "str", "fold0..fold9 (10 consecutive chunks) or e.g. fold01", check=_fold_name,
                         ensemble="--folds")
    folds_file: str | None = opt(None, "path", "CSV id,fold (python -m datasets.folds) replacing the consecutive "
                                               "chunks", optional=True, ensemble="--folds-file")
    input_mode: str = opt("pad", "choice", "how a 101x101 tile enters the model: "
                          + "; ".join(INPUT_MODES.describe()), choices=INPUT_MODES.names(), ensemble="--modes")
    resize: bool = opt(False, "bool", "shorthand for --input-mode resize", ensemble="--modes")
    input_size: int = opt(128, "int", "model input side (pad or resize target)", low=1, high=1024,
                          ensemble=" / ".join(size_flag(m) for m in INPUT_MODES.names()))
    disable_cutout: bool = opt(False, "bool", "no cutout augmentation")
    no_augment: bool = opt(False, "bool", "no augmentation at all")
    drop_mask_threshold: int = opt(0, "int", "drop training images whose mask has 1..N-1 salt pixels (tiny, "
                                             "doubtful labels)", low=0, high=101 * 101)
    dataload_workers_nums: int = opt(2, "int", "DataLoader worker processes", low=0, run_only=True)
    no_cache: bool = opt(False, "bool", "do not read or write the decoded-PNG cache", run_only=True)

    @property
    def mode(self) -> str:
        """The input mode in effect (``--resize`` is ``--input-mode resize``)."""
        return "resize" if self.resize else self.input_mode


@dataclass(frozen=True)
class ModelOptions:
    basenet: str = opt("senet154", "str", "encoder: a timm model, a recipe alias (senet154, se_resnext50_32x4d, "
                                          "...), unet, unet_nopool")
    pretrained: str = opt("none", "str", "imagenet (timm), a local weights file, or none", check=_weights)
    input_upsample: int = opt(2, "int", "up-sample the input before the encoder (recipe: 2)", choices=(1, 2, 4))
    oc: str = opt("both", "choice", "object-context blocks in the centre and/or decoder blocks", choices=OC)
    scse: bool = opt(False, "bool", "scSE attention in decoder blocks")
    skip: str = opt("concat", "choice", "skip fusion", choices=SKIP)
    center_channels: int = opt(256, "int", "width of the centre block", low=1)
    decoder_channels: int = opt(64, "int", "width of each decoder block", low=1)
    encoder_width: int = opt(64, "int", "base width of the from-scratch encoders", low=1)
    dropout: float = opt(0.5, "float", "dropout of the heads", low=0.0, high=1.0, open_high=True)
    sync_bn: bool = opt(False, "bool", "SyncBatchNorm under DDP")

    def model_config(self, pretrained: bool = True):
        """The architecture (:class:`models.ModelConfig`); ``pretrained=False`` leaves the weights random (a resumed
        run loads its own)."""
        import models

        weights = None if (not pretrained or self.pretrained in ("", "none")) else self.pretrained
        return models.ModelConfig(
            encoder=self.basenet, pretrained=weights, input_upsample=self.input_upsample,
            center_channels=self.center_channels, decoder_channels=self.decoder_channels,
            oc_center=self.oc in ("both", "center"), oc_decoder=self.oc in ("both", "decoder"),
            scse=self.scse, skip=self.skip, dropout=self.dropout, encoder_width=self.encoder_width)


def _gathered(registry: Registry) -> list[Declared]:
    """The options declared by a registry's entries, each once (an option may serve several entries)."""
    out: dict[str, Declared] = {}
    for entry in registry.entries():
        for d in entry.options:
            if d.name in out and out[d.name] is not d:
                raise ValueError(f"option {d.name!r} is declared twice in the {registry.kind} registry")
            out[d.name] = d
    return list(out.values())


def _section(name: str, before: list, registries: tuple[Registry, ...], after: list, doc: str, methods: dict):
    """A frozen section dataclass: its own fields, then the options its registries' entries declare."""
    declared = [d.dataclass_field() for r in registries for d in _gathered(r)]
    cls = make_dataclass(name, [*before, *declared, *after], frozen=True, namespace=methods)
    cls.__doc__ = doc
    cls.__module__ = __name__
    return cls


def _criterion(self):
    """The loss (``losses.build_loss``) with the options of the losses in its spec."""
    from losses import build_loss, parse_spec

    kwargs = {d.kwarg: getattr(self, d.name) for n, _ in parse_spec(self.loss) for d in LOSSES.get(n).options}
    return build_loss(self.loss, **kwargs)


LossOptions = _section(
    "LossOptions",
    [("loss", str, opt("deep", "str", "a loss or a weighted sum, e.g. lovasz:0.7,bce:0.15,dice:0.15; losses: "
                       + "; ".join(LOSSES.describe()), check=_loss_spec))],
    (LOSSES,),
    [("loss_on_center", bool, opt(False, "bool", "loss on the central 101x101 only (an input mode that keeps "
                                                 "the tile's pixels, i.e. pad)"))],
    "The loss: its spec, and the options its registered losses declare (losses.base.register_loss).",
    {"criterion": _criterion})


def _optimizer(self, params):
    """The optimiser over ``params`` (``engine.optimizers``), with its declared options."""
    entry = optimizers.OPTIMIZERS.get(self.optim)
    return optimizers.build(self.optim, params, lr=self.learning_rate, weight_decay=self.weight_decay,
                            **{d.kwarg: getattr(self, d.name) for d in entry.options})


def _scheduler(self, optimizer):
    """The learning-rate schedule (``engine.schedulers``), with its declared options."""
    entry = schedulers.SCHEDULES.get(self.lr_scheduler)
    return schedulers.build(self.lr_scheduler, optimizer, base_lr=self.learning_rate,
                            **{d.kwarg: getattr(self, d.name) for d in entry.options})


OptimOptions = _section(
    "OptimOptions",
    [("batch_size", int, opt(32, "int", "images per batch, per process", low=1)),
     ("val_batch_size", int, opt(0, "int", "0: same as --batch-size", low=0, resumable=True)),
     ("optim", str, opt("adamw", "choice", "optimiser: " + "; ".join(optimizers.OPTIMIZERS.describe()),
                        choices=optimizers.OPTIMIZERS.names())),
     ("learning_rate", float, opt(5e-4, "float", "base learning rate", low=0.0, open_low=True, high=10.0)),
     ("weight_decay", float, opt(1e-4, "float", "weight decay", low=0.0)),
     ("gradient_accumulation", int, opt(1, "int", "batches per optimizer step", low=1)),
     ("lr_scheduler", str, opt("noam", "choice", "learning-rate schedule: "
                               + "; ".join(schedulers.SCHEDULES.describe()), choices=schedulers.SCHEDULES.names()))],
    (optimizers.OPTIMIZERS, schedulers.SCHEDULES),
    [("max_epochs", int, opt(250, "int", "epochs to train", low=1, resumable=True)),
     ("early_stopping", int, opt(0, "int", "stop after N epochs without a better metric (0: off)", low=0,
                                 resumable=True))],
    "Optimisation: batch, optimiser, schedule, and the options the registered optimisers and schedules declare.",
    {"optimizer": _optimizer, "scheduler": _scheduler})


@dataclass(frozen=True)
class RunOptions:
    log_dir: str = opt("runs/fold0", "path", "metrics, TensorBoard, checkpoints/ and models/", run_only=True,
                       ensemble="--run-dir")
    resume: str | None = opt(None, "path", "a checkpoints/*-checkpoint-*.pth to continue exactly", optional=True,
                             repeated=False, ensemble="is automatic (a fold with a last checkpoint resumes)")
    overwrite: bool = opt(False, "bool", "start afresh over the files of an earlier run (they are removed)",
                          repeated=False, ensemble="--overwrite")
    vtf: bool = opt(False, "bool", "validate with horizontal-flip TTA")
    device: str = opt("auto", "str", "auto, cpu, cuda, cuda:N", check=_device, run_only=True, shared=True)
    amp: str = opt("none", "choice", "mixed precision", choices=AMP, resumable=True, shared=True)
    channels_last: bool = opt(False, "bool", "channels-last memory format", resumable=True)
    compile: bool = opt(False, "bool", "torch.compile the model", run_only=True)
    seed: int = opt(0, SEED)
    comment: str = opt("", "str", "free text kept in config.yaml and checkpoints", run_only=True)
    threads: int = opt(0, "int", "torch CPU threads (0: torch's default)", low=0, high=1024, run_only=True,
                       shared=True)


@dataclass(frozen=True)
class PseudoOptions:
    """Training on pseudo-labelled test images as well (a ``pseudo.py`` file); validation stays the fold's real
    images. mix: each batch holds ``round(F x batch size)`` pseudo images (:meth:`per_batch`) and the rest real
    ones, an epoch being one pass over the real images, the loss the mean over the batch's images with weight W
    for a pseudo one; pretrain: the first N epochs on the pseudo-labels alone, then the real images alone."""

    pseudo_labels: str | None = opt(None, "path", "a pseudo-labels.npz (pseudo.py) of this data set's test images "
                                                  "to train on as well", optional=True, resumable=True,
                                 ensemble="--pseudo-rounds")
    pseudo_fraction: float = opt(0.25, "float", "mix: the share F of each batch drawn from the pseudo-labels "
                                                "(round(F x batch size) images)", low=0.0, high=1.0, open_high=True,
                                 used_with=("pseudo_schedule", ("mix",)), ensemble="--pseudo-fraction")
    pseudo_weight: float = opt(1.0, "float", "mix: weight W of a pseudo-labelled image in the batch's loss (a real "
                                             "image weighs 1)", low=0.0, used_with=("pseudo_schedule", ("mix",)),
                               ensemble="--pseudo-weight")
    pseudo_schedule: str = opt("mix", "choice", "mix: every batch carries the share; pretrain: --pseudo-epochs on "
                                                "the pseudo-labels alone, then the real images alone",
                               choices=PSEUDO_SCHEDULES, ensemble="--pseudo-schedule")
    pseudo_epochs: int = opt(0, "int", "pretrain: epochs N on the pseudo-labels alone (counted in --max-epochs)",
                             low=0, used_with=("pseudo_schedule", ("pretrain",)), ensemble="--pseudo-epochs")

    def per_batch(self, batch_size: int) -> int:
        """Pseudo images in a mixed batch of ``batch_size``: ``F x batch_size`` rounded half up."""
        return int(math.floor(self.pseudo_fraction * batch_size + 0.5))


SECTIONS: dict[str, type] = {"data": DataOptions, "model": ModelOptions, "loss": LossOptions,
                             "optimisation": OptimOptions, "pseudo-labels": PseudoOptions, "run": RunOptions}
_ATTR = {"data": "data", "model": "model", "loss": "loss", "optimisation": "optim", "pseudo-labels": "pseudo",
         "run": "run"}


def options() -> dict[str, tuple[str, dataclasses.Field]]:
    """Every option by name: (section title, its dataclass field)."""
    out = {}
    for title, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f.name] = (title, f)
    return out


def _where(test) -> tuple[str, ...]:
    return tuple(name for name, (_, f) in options().items() if test(f.metadata["option"]))


# the sets every reader derives from the options' declarations (tgs.options.Option)
NOT_REPEATED = _where(lambda o: not o.repeated)  # about this invocation: not in config.yaml, not re-applied
RUN_ONLY = _where(lambda o: o.run_only)  # where and how a run runs: a finished model made otherwise is reused
RESUMABLE_CHANGES = _where(lambda o: o.run_only or o.resumable)  # may change when a run is resumed
SHARED = _where(lambda o: o.shared)  # ensemble.py gives these training options to SWA and prediction as well
SET_BY_ENSEMBLE = {name: spec.metadata["option"].ensemble for name, (_, spec) in options().items()
                   if spec.metadata["option"].ensemble}  # ensemble.py sets them: {option: its flag, or what it does}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def spec(name: str) -> Option:
    return options()[name][1].metadata["option"]


# -- checking one value -----------------------------------------------------------------------------------------
def coerce(name: str, value: Any, where: str, text: bool = False) -> Any:
    """``value`` of option ``name`` as its type, or a UserError ``{where}: {problem}`` (:meth:`Option.coerce`)."""
    return spec(name).coerce(value, where, text)


# -- options that only some choices use: (the option) -> (the option that decides, the choices that use it) -----
def _used_only_with() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Derived from the registries (an entry's declared options) and the pseudo-label schedules."""
    out = {}
    for key, registry in (("loss", LOSSES), ("optim", optimizers.OPTIMIZERS),
                          ("lr_scheduler", schedulers.SCHEDULES)):
        for d in _gathered(registry):
            out[d.name] = (key, tuple(e.name for e in registry.entries() if d in e.options))
    out.update({name: f.metadata["option"].used_with for name, (_, f) in options().items()
                if f.metadata["option"].used_with})
    return out


USED_ONLY_WITH = _used_only_with()


def _chosen(key: str, value: str) -> set[str]:
    """The registered names a value of a deciding option chooses (a loss spec names several)."""
    if key == "loss":
        from losses import parse_spec

        return {n for n, _ in parse_spec(value)}
    return {value}


# -- the whole configuration ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    data: DataOptions = field(default_factory=DataOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    loss: LossOptions = field(default_factory=LossOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    pseudo: PseudoOptions = field(default_factory=PseudoOptions)
    run: RunOptions = field(default_factory=RunOptions)

    def unused(self, given: Iterable[str]) -> list[str]:
        """Notes for options that were given (flags or file keys) but that this configuration does not use, e.g.
        ``--momentum`` with ``--optim adamw``: nothing given is ignored without a word."""
        values, out = self.to_dict(repeated_only=False), []
        defaults = TrainConfig().to_dict(repeated_only=False)
        given = set(given)
        for name in [n for n in values if n in given and values[n] != defaults[n]]:  # a default changes nothing
            if name in USED_ONLY_WITH:
                key, wanted = USED_ONLY_WITH[name]
                if not _chosen(key, values[key]) & set(wanted):
                    which = " / ".join(wanted) + (" loss" if key == "loss" else "")
                    out.append(f"{flag(name)} is not used with {flag(key)} {values[key]} (only with the {which})"
                               if key == "loss" else
                               f"{flag(name)} is not used with {flag(key)} {values[key]} (only with {which})")
        return out

    def to_dict(self, repeated_only: bool = True) -> dict:
        """Flat ``{option: value}`` of builtins, sorted (without ``resume``/``overwrite`` unless
        ``repeated_only=False``)."""
        out = {}
        for attr in _ATTR.values():
            out.update(dataclasses.asdict(getattr(self, attr)))
        if repeated_only:
            for key in NOT_REPEATED:
                out.pop(key, None)
        return dict(sorted(out.items()))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: Mapping[str, str] | None = None,
                  text: frozenset | set = frozenset()) -> "TrainConfig":
        """A validated config from flat ``values`` (missing options take their defaults). ``where[name]`` says
        where a value came from, for errors (default: its flag); names in ``text`` are command-line strings."""
        where = dict(where or {})
        known = options()
        unknown = [k for k in values if k not in known]
        if unknown:
            raise UserError(f"{where.get(unknown[0], unknown[0])}: unknown option{_did_you_mean(unknown[0])}")
        parts: dict[str, dict] = {title: {} for title in SECTIONS}
        for name, value in values.items():
            title = known[name][0]
            parts[title][name] = coerce(name, value, where.get(name, flag(name)), text=name in text)
        cfg = cls(**{_ATTR[t]: SECTIONS[t](**kw) for t, kw in parts.items()})
        cfg.check(lambda n: where.get(n, flag(n)))
        return cfg

    def check(self, where: Callable[[str], str] = flag) -> None:
        """The checks that involve several options."""
        if self.data.resize and self.data.input_mode not in ("pad", "resize"):
            raise UserError(f"{where('resize')} is --input-mode resize: it cannot be used with "
                            f"{where('input_mode')} {self.data.input_mode}")
        try:
            InputSpec(self.data.mode, self.data.input_size)
        except UserError as exc:
            raise UserError(f"{where('input_size')} {self.data.input_size}: {exc}") from None
        if self.loss.loss_on_center and not INPUT_MODES.get(self.data.mode).keeps_pixels:
            given = where("resize") if self.data.resize else f"{where('input_mode')} {self.data.mode}"
            raise UserError(f"{where('loss_on_center')} needs reflect padding: it cannot be used with {given}")
        if self.run.resume and self.run.overwrite:
            raise UserError(f"{where('overwrite')} starts afresh: it cannot be used with {where('resume')}")
        try:
            self.loss.criterion()
        except UserError as exc:
            raise UserError(f"{where('loss')}: {exc}") from None
        self._check_pseudo(where)

    def _check_pseudo(self, where: Callable[[str], str]) -> None:
        """Pseudo-label options only with --pseudo-labels, each with the schedule it belongs to, and a batch that
        holds both kinds of image."""
        p, default = self.pseudo, PseudoOptions()
        changed = [n for n in ("pseudo_fraction", "pseudo_weight", "pseudo_schedule", "pseudo_epochs")
                   if getattr(p, n) != getattr(default, n)]
        if p.pseudo_labels is None:
            if changed:
                raise UserError(f"{where(changed[0])} needs {where('pseudo_labels')}")
            return
        if p.pseudo_schedule == "mix":
            k, bs = p.per_batch(self.optim.batch_size), self.optim.batch_size
            if p.pseudo_epochs:
                raise UserError(f"{where('pseudo_epochs')} goes with {where('pseudo_schedule')} pretrain")
            if k == 0:
                raise UserError(f"{where('pseudo_fraction')} {p.pseudo_fraction:g} puts no pseudo-labelled image "
                                f"into a batch of {bs} (round({p.pseudo_fraction:g} x {bs}) = 0)")
            if k >= bs:
                raise UserError(f"{where('pseudo_fraction')} {p.pseudo_fraction:g} leaves no real image in a batch "
                                f"of {bs} (round({p.pseudo_fraction:g} x {bs}) = {k})")
            return
        for name in ("pseudo_fraction", "pseudo_weight"):
            if name in changed:
                raise UserError(f"{where(name)} goes with {where('pseudo_schedule')} mix (pretrain batches hold "
                                "one kind of image)")
        if p.pseudo_epochs < 1:
            raise UserError(f"{where('pseudo_schedule')} pretrain needs {where('pseudo_epochs')} N >= 1")
        if p.pseudo_epochs >= self.optim.max_epochs:
            raise UserError(f"{where('pseudo_epochs')} {p.pseudo_epochs} leaves none of the "
                            f"{where('max_epochs')} {self.optim.max_epochs} epochs for the real images")

    def replace(self, **flat) -> "TrainConfig":
        """A copy with some options changed (validated like any other value)."""
        return TrainConfig.from_dict({**self.to_dict(repeated_only=False), **flat})

    @classmethod
    def from_checkpoint(cls, meta: Mapping, path: str | Path = "checkpoint") -> "TrainConfig":
        """The options of the run a checkpoint's ``meta["config"]`` came from; options it does not record take their
        defaults, and keys this code does not know are ignored."""
        stored = dict(meta.get("config") or {})
        known = options()
        values = {k: v for k, v in stored.items() if k in known and k not in NOT_REPEATED}
        where = {k: f"{path}: stored option {k}" for k in values}
        return cls.from_dict(values, where)

    def differences(self, other: "TrainConfig", ignore: tuple = ()) -> list[str]:
        """``name a -> b`` for each option whose value differs (``ignore``: names left out)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k} {a[k]!r} -> {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


def trained_fold(meta: Mapping) -> str | None:
    """The fold a checkpoint's model was trained on (or an SWA model's BatchNorm recomputed on): its configuration's
    ``data_fold``, the one place a checkpoint records it; None where the checkpoint records no configuration."""
    fold = (meta.get("config") or {}).get("data_fold")
    return fold if isinstance(fold, str) and fold else None


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(options()), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


# -- YAML files -------------------------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict[str, tuple[Any, str]]:
    """``--config FILE.yaml``: ``{option: (value, where)}``, keys as flag names with ``_`` or ``-``; an unknown key,
    a file that is not a mapping or not YAML is a one-line UserError naming the file."""
    path = require_file(path, "--config ", "YAML file")
    try:
        data = yaml.load(read_config_text(path, "--config "), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise UserError(f"--config {path}: key {excerpt(str(exc))} is given twice") from None
    except _Alias as exc:
        raise UserError(f"--config {path}: {exc}: aliases (*name) are refused, give each value itself") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value")
    known = options()
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        where = f"--config {path}, key {key}"
        if name not in known:
            raise UserError(f"--config {path}: unknown option {excerpt(key)}{_did_you_mean(name)}")
        if name in NOT_REPEATED:
            raise UserError(f"{where}: give {flag(name)} on the command line, not in a config file")
        if name in out:
            raise UserError(f"{where}: the option is given twice (also as {out[name][1].rsplit('key ', 1)[-1]})")
        coerce(name, value, where)  # every value of the file is checked, also one that a flag overrides
        out[name] = (value, where)
    return out


class _DuplicateKey(Exception):
    pass


class _Alias(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a mapping that repeats a key (yaml itself keeps the last one silently) and any
    alias (``*name``): a few hundred bytes of nested aliases expand to gigabytes once anything walks the values
    (the "billion laughs"), and a flat option file never needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Alias(f"line {event.start_mark.line + 1}: alias *{str(event.anchor)[:40]}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
            except TypeError:  # an unhashable key: yaml's own error follows
                break
            if repeated:
                raise _DuplicateKey(str(key))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def resolve(given: Mapping[str, Any], config_file: str | Path | None = None) -> TrainConfig:
    """Defaults < ``config_file``'s keys < ``given`` (command-line strings, or True for a switch given)."""
    return combine(given, read_yaml(config_file) if config_file else {})


def combine(given: Mapping[str, Any], from_file: Mapping[str, tuple[Any, str]]) -> TrainConfig:
    """:func:`resolve` with the config file already read (:func:`read_yaml`'s ``{option: (value, where)}``)."""
    values, where = {}, {}
    for name, (value, w) in from_file.items():
        values[name], where[name] = value, w
    for name, value in given.items():
        values[name], where[name] = value, flag(name)
    text = {n for n, v in given.items() if isinstance(v, str)}
    return TrainConfig.from_dict(values, where, text=text)


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    with atomic_open(path, "w") as fh:
        fh.write("# resolved configuration of this run; `python train.py --config THIS_FILE` repeats it\n")
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=True)
