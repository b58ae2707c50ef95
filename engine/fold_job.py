"""The program a fold's job runs: ``python -m engine.fold_job JOBFOLDER STEP`` (under torchrun when the job has
several GPUs), STEP being ``train`` or ``swa``.

A fold job is typed data, not a command line: :class:`FoldSpec` (the fold's resolved training configuration, its
SWA options, its last checkpoint, and what its SWA model's record of inputs says) is written as JSON of plain
values into the fold's job folder (``JOBFOLDER/fold.json``) by the ensemble, and read back here; each step calls
the engine directly (:func:`engine.trainer.run`, :func:`engine.swa.run`). The train step resumes from the fold's
last checkpoint when it exists (a retried or requeued job goes on where the fold stopped); the swa step writes
the SWA model's record (``FOLD_swa.pth.made-from.json``) once the model is written. A user or data error exits
with code 2 and one line (the job does not retry it).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tgs.compat  # noqa: F401  (environment and torchvision shim, before anything imports timm)
from engine.config import TrainConfig
from tgs.errors import UserError, cli

SPEC = "fold.json"  # in the fold's job folder
STEPS = ("train", "swa")
FOLD_OPTIONS = ("data_dir", "data_fold", "log_dir", "resize", "input_size")  # always shown by describe()


@dataclass(frozen=True)
class FoldSpec:
    """Everything a fold's job does, as plain data."""

    label: str  # MODE/FOLD
    train: dict  # the fold's TrainConfig (to_dict(repeated_only=False)), without resume: decided when it runs
    swa: dict  # engine.swa.SwaOptions's fields
    last: str  # the fold's last checkpoint: the train step resumes from it when it exists
    swa_record: dict = field(default_factory=dict)  # written beside the SWA model once it is made

    def train_config(self) -> TrainConfig:
        """The training configuration of a step started now (resuming when the fold has a last checkpoint)."""
        cfg = TrainConfig.from_dict(self.train)
        return cfg.replace(resume=self.last) if Path(self.last).is_file() else cfg

    def swa_options(self):
        from engine.swa import SwaOptions

        return SwaOptions(**{**self.swa, "inputs": tuple(self.swa["inputs"])})

    @property
    def output(self) -> str:
        return self.swa["output"]

    def write(self, folder: str | Path) -> Path:
        from tgs.io import atomic_open

        path = Path(folder) / SPEC
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w") as fh:
            json.dump(dataclasses.asdict(self), fh, indent=1)
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "FoldSpec":
        path = Path(folder) / SPEC
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise UserError(f"{path}: not a fold job's options ({exc})") from None

    def describe(self, step: str) -> str:
        """One line of what ``step`` does: the options that are not the defaults."""
        if step == "train":
            defaults = TrainConfig().to_dict(repeated_only=False)
            given = {k: v for k, v in self.train.items() if v != defaults.get(k) or k in FOLD_OPTIONS}
            resume = f" (resuming from {self.last} if it exists)"
        else:
            given, resume = {k: v for k, v in self.swa.items() if v not in (None, False, 0, "auto", "none")}, ""
        return f"{step} " + " ".join(f"{k}={_plain(v)}" for k, v in given.items()) + resume


def _plain(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def run(folder: str | Path, step: str) -> int:
    """Run ``step`` of the fold job written in ``folder``."""
    spec = FoldSpec.read(folder)
    if step == "train":
        from engine import trainer

        return trainer.run(spec.train_config())
    from engine import swa
    from engine.layout import EnsembleLayout
    from tgs.io import atomic_open

    code = swa.run(spec.swa_options())
    with atomic_open(EnsembleLayout.stamp_of(Path(spec.output)), "w") as fh:
        json.dump(spec.swa_record, fh)
    return code


@cli
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 2 or argv[1] not in STEPS:
        raise UserError(f"usage: python -m engine.fold_job JOBFOLDER {{{','.join(STEPS)}}}")
    return run(*argv)


if __name__ == "__main__":
    sys.exit(main())
