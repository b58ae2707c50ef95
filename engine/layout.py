"""The file names of the pipeline's folders, in one place: a training run (:class:`RunLayout`), an ensemble run
(:class:`EnsembleLayout`) and the pair of outputs a prediction writes (:class:`Outputs`). The trainer, swa, test,
the ensemble runner and the reports all ask these objects; none of them builds a run's file name itself.

A training run (``LOG_DIR``)::

    config.yaml                                  the resolved options (train.py --config repeats the run)
    metrics.csv, events.out.tfevents.*          one row / scalar set per epoch
    checkpoints/{last,best-metric,best-loss,best-accuracy}-checkpoint-FOLD.pth   full resume state
    models/{last,best-metric,best-loss,best-accuracy}-FOLD.pth                  model only (swa.py, test.py)
    models/snapshot-eNNN-FOLD.pth                end of each cosine cycle

An ensemble run (``RUN``)::

    MODE/FOLD/                                   a training run
    MODE/FOLD_swa.pth                            its averaged model
    logs/MODE-FOLD.log, logs/{oof,search,test}.log
    jobs/MODE-FOLD/                              the fold's job: fold.json (its typed options, engine.fold_job)
                                                 and submitit's files (pickles, job logs, sbatch script)
    oof/FOLD-probabilities.npz, oof-probabilities.npz     out-of-fold predictions, per fold and merged
    postprocess.json                             the setting the out-of-fold search chose
    ensemble-submission.csv, ensemble-probabilities.npz
    pseudo-labels.npz                            pseudo-labels of the whole ensemble (for the next round), or
    pseudo/FOLD-test-probabilities.npz, pseudo/FOLD-labels.npz   those of one fold's own models
    round1/, round2/ ...                         self-training rounds: each an ensemble run of its own
    mosaics/mosaics.csv, mosaics/pairs.csv, mosaics/source.json   the mosaics (built once for the data set)
    folds.csv                                    mosaic-aware folds (--mosaic-folds)
    *.made-from.json, outputs.made-from.json     what an output was made from (engine.ensemble.reuse)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

KINDS = ("last", "best-metric", "best-loss", "best-accuracy")
BEST = {"metric": "best-metric", "loss": "best-loss", "accuracy": "best-accuracy"}


@dataclass(frozen=True)
class RunLayout:
    """The files of one training run of ``fold`` in ``root``."""

    root: Path
    fold: str

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def checkpoint(self, kind: str = "last") -> Path:
        """Full resume state of ``kind`` (last, best-metric, best-loss, best-accuracy)."""
        return self.checkpoints / f"{kind}-checkpoint-{self.fold}.pth"

    def model(self, kind: str = "last") -> Path:
        return self.models / f"{kind}-{self.fold}.pth"

    def snapshot(self, epoch: int) -> Path:
        return self.models / f"snapshot-e{epoch:03d}-{self.fold}.pth"

    def event_files(self) -> list[Path]:
        return sorted(self.root.glob("events.out.tfevents.*"))

    def run_files(self) -> list[Path]:
        """Everything a run writes here (what ``--overwrite`` removes), whatever its fold."""
        out = [p for p in (self.config, self.metrics) if p.exists()] + self.event_files()
        for folder in (self.checkpoints, self.models):
            if folder.is_dir():
                out += sorted(p for p in folder.iterdir() if p.is_file())
        return out

    @classmethod
    def discover(cls, root: Path) -> "RunLayout | None":
        """The layout of an existing run folder: its fold from ``config.yaml`` (``data_fold``), else from the names
        of its model files when they are of one fold; None when neither says (no run yet)."""
        import yaml

        root = Path(root)
        try:
            data = yaml.safe_load((root / "config.yaml").read_text())
            fold = data.get("data_fold") if isinstance(data, dict) else None
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            fold = None
        if isinstance(fold, str) and fold:
            return cls(root, fold)
        folds = set()
        for kind in KINDS:
            folds |= {p.name[len(kind) + 1:-4] for p in (root / "models").glob(f"{kind}-*.pth")}
        if len(folds) > 1:
            from tgs.errors import UserError

            raise UserError(f"{root / 'models'} holds models of several folds ({', '.join(sorted(folds))}); "
                            "choose one with --checkpoint PATH")
        return cls(root, folds.pop()) if folds else None

    def holds_run(self) -> bool:
        """True when a run has written here (a config, metrics, checkpoints or models)."""
        return bool(self.run_files())


@dataclass(frozen=True)
class Outputs:
    """``PREFIX-submission.csv`` and ``PREFIX-probabilities.npz``: what one prediction writes."""

    prefix: str

    @property
    def csv(self) -> Path:
        return Path(f"{self.prefix}-submission.csv")

    @property
    def npz(self) -> Path:
        return Path(f"{self.prefix}-probabilities.npz")

    @staticmethod
    def name_of(npz: Path) -> str:
        """``fold0-valid-probabilities.npz`` -> ``fold0-valid``: the name the report files of a .npz start with."""
        stem = npz.name[:-4] if npz.name.endswith(".npz") else npz.name
        for tail in ("-probabilities", "_probabilities", ".probabilities"):
            if stem.endswith(tail) and len(stem) > len(tail):
                return stem[: -len(tail)]
        return stem


@dataclass(frozen=True)
class EnsembleLayout:
    """The files of an ensemble run in ``root`` (see the module docstring)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def fold_run(self, mode: str, fold: str) -> RunLayout:
        return RunLayout(self.root / mode / fold, fold)

    def swa(self, mode: str, fold: str) -> Path:
        return self.root / mode / f"{fold}_swa.pth"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def fold_log(self, mode: str, fold: str) -> Path:
        return self.log(f"{mode}-{fold}")

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def fold_jobs(self, mode: str, fold: str) -> Path:
        """The job files of a fold's jobs (every attempt's, named by job id)."""
        return self.jobs / f"{mode}-{fold}"

    def oof(self, fold: str) -> Outputs:
        return Outputs(str(self.root / "oof" / fold))

    @property
    def merged_oof(self) -> Outputs:
        return Outputs(str(self.root / "oof"))

    @property
    def postprocess(self) -> Path:
        return self.root / "postprocess.json"

    @property
    def submission(self) -> Outputs:
        return Outputs(str(self.root / "ensemble"))

    @property
    def outputs_stamp(self) -> Path:
        """What the out-of-fold predictions, the search and the submission were made from (:func:`stamp`)."""
        return self.root / "outputs.made-from.json"

    @staticmethod
    def stamp_of(path: Path) -> Path:
        """What the file ``path`` was made from: ``PATH.made-from.json`` beside it."""
        return path.with_name(path.name + ".made-from.json")

    @property
    def mosaics(self) -> Path:
        """The folder mosaic.py writes into (mosaics.csv, pairs.csv), and ``source.json`` naming the data it was
        built from (its fingerprint), so it is rebuilt only for other data."""
        return self.root / "mosaics"

    @property
    def mosaics_csv(self) -> Path:
        return self.mosaics / "mosaics.csv"

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    def round(self, r: int) -> "EnsembleLayout":
        """Self-training round ``r``: round 0 is this run, round r >= 1 the ensemble run in ``round{r}/``."""
        return self if r == 0 else EnsembleLayout(self.root / f"round{r}")

    @property
    def pseudo_labels(self) -> Path:
        """Pseudo-labels chosen from this run's ensemble submission (``--pseudo-source ensemble``)."""
        return self.root / "pseudo-labels.npz"

    def fold_test(self, fold: str) -> Outputs:
        """Test predictions of one fold's own models (``--pseudo-source fold``)."""
        return Outputs(str(self.root / "pseudo" / f"{fold}-test"))

    def fold_pseudo_labels(self, fold: str) -> Path:
        return self.root / "pseudo" / f"{fold}-labels.npz"
