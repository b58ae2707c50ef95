"""The folds of an ensemble run as jobs (:class:`Job`: an input mode and a fold, and the files of both) and the
training configuration each one trains with (:func:`fold_config`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import TrainConfig
from engine.ensemble.options import EnsembleOptions
from engine.layout import EnsembleLayout, RunLayout


@dataclass(frozen=True)
class Job:
    mode: str
    fold: str
    layout: EnsembleLayout

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.fold}"

    @property
    def run(self) -> RunLayout:
        return self.layout.fold_run(self.mode, self.fold)

    @property
    def swa(self) -> Path:
        return self.layout.swa(self.mode, self.fold)

    @property
    def log(self) -> Path:
        return self.layout.fold_log(self.mode, self.fold)

    @property
    def job_files(self) -> Path:
        return self.layout.fold_jobs(self.mode, self.fold)


def jobs_of(opts: EnsembleOptions) -> list[Job]:
    return [Job(mode, fold, opts.layout) for mode in opts.modes for fold in opts.folds]


def labels_of(fold: str, opts: EnsembleOptions) -> str | None:
    """The pseudo-labels file ``fold`` trains on in this round (None in round 0)."""
    if opts.pseudo_labels is None or isinstance(opts.pseudo_labels, str):
        return opts.pseudo_labels
    return dict(opts.pseudo_labels)[fold]


def fold_config(job: Job, opts: EnsembleOptions, **place) -> TrainConfig:
    """The configuration ``job`` trains with: every fold's options, its data, fold, folder, input mode and size,
    folds file and pseudo-labels, and ``place``'s options (device, threads); checked like any configuration."""
    fields = dict(data_dir=str(opts.data_dir), data_fold=job.fold, log_dir=str(job.run.root),
                  input_size=opts.size_of(job.mode), input_mode=job.mode, resize=False,
                  folds_file=opts.folds_file)
    labels = labels_of(job.fold, opts)
    if labels is not None:
        fields.update(pseudo_labels=labels, **opts.pseudo_train)
    return opts.train.replace(**fields, **place)
