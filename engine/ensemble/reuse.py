"""What decides that an output of an earlier run is reused: the digests of every input that made it.

One rule for every output the ensemble reuses (the mosaics, the mosaic folds, the out-of-fold predictions, the
search and the submission, the pseudo-labels, a fold's SWA model): beside it, a record (``PATH.made-from.json``,
:func:`stamp`) of the digests of its input files (the data's train and test sets, the folds file, the models, the
mosaics, the predictions it was chosen from) and of the options that change its result. It is reused only when
every output exists and the record equals the one of what is asked now; otherwise it is made again. A fold's
trained models are the one output that remaking would lose: their own checkpoints record the data, the folds file,
the pseudo-labels and the options (:class:`FoldReuse`), and a fold made from other ones stops the run with one line
unless ``overwrite``. docs/promises.md lists the digests.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from engine.config import RESUMABLE_CHANGES, RUN_ONLY, TrainConfig
from engine.ensemble.naming import Job, fold_config, labels_of
from engine.ensemble.options import SWA_RUN_ONLY, EnsembleOptions
from engine.layout import EnsembleLayout
from engine.pseudo import file_meta as pseudo_file_meta
from engine.pseudo import mismatch as pseudo_mismatch
from tgs.errors import UserError, few
from tgs.io import atomic_open
from tgs.pseudo import digest as file_digest  # sha256 of a file's bytes


@dataclass
class DataDigests:
    """The digests of a data set's train and test sets (ids, images, masks), each computed once, when needed."""

    data_dir: str

    @functools.cached_property
    def train(self) -> str:
        from datasets.kaggle import load_train

        return load_train(self.data_dir).fingerprint()

    @functools.cached_property
    def test(self) -> str:
        from datasets.kaggle import load_test

        return load_test(self.data_dir).fingerprint()


def folds_digest(folds_file: str | None) -> str | None:
    """The folds file's contents digest (None: the consecutive chunks)."""
    from datasets.folds import digest

    return digest(folds_file)


def stamp(files: dict, options: dict) -> dict:
    """The record of what an output is made from: ``{name: path}`` of input files (their contents digests; a
    digest given as ``str`` is taken as it is) and the options that change the result (as text)."""
    inputs = {}
    for name, value in files.items():
        if value is None:
            inputs[name] = None
        elif isinstance(value, (list, tuple)):
            inputs[name] = [file_digest(v) for v in value]
        else:
            inputs[name] = file_digest(value)
    return {"inputs": inputs, "options": {k: str(v) for k, v in sorted(options.items())}}


def made_from(opts: EnsembleOptions, data: DataDigests, files: dict, options: dict) -> dict:
    """:func:`stamp` of an output of a round: ``files``, the data's train and test sets, the folds file and the
    mosaics are its inputs."""
    record = stamp({**files, "folds_file": opts.folds_file, "mosaics": opts.mosaics_csv}, options)
    record["inputs"].update(train=data.train, test=data.test)
    return record


def read_record(marker: Path) -> dict | None:
    """A record, or None when it is missing or damaged (then the outputs are made again)."""
    try:
        record = json.loads(Path(marker).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def fresh(marker: Path, source: dict, outputs) -> bool:
    """True when every output exists and ``marker`` says they were made from ``source`` (a :func:`stamp`)."""
    return all(Path(o).is_file() for o in outputs) and read_record(marker) == source


def reused(marker: Path, source: dict, outputs, line: str) -> bool:
    """True (and ``line`` printed) when :func:`fresh`; else the stale ``marker`` goes, and the step runs."""
    if fresh(marker, source, outputs):
        print(line)
        return True
    Path(marker).unlink(missing_ok=True)
    return False


def mark(marker: Path, source: dict) -> None:
    with atomic_open(marker, "w") as fh:
        json.dump(source, fh)


# -- a fold's models ------------------------------------------------------------------------------------------------
def swa_record(job: Job, opts: EnsembleOptions, swa: dict) -> dict:
    """What a fold's SWA model records beside it (written by its job once it is made): the folds file's digest and
    the SWA options that change the result (``swa``: SwaOptions's fields)."""
    return {"folds_digest": folds_digest(opts.folds_file), "fold": job.fold,
            "swa": {k: v for k, v in sorted(swa.items()) if k not in SWA_RUN_ONLY}}


@dataclass
class FoldReuse:
    """Decides whether a fold's files may be reused: the same data, folds file, pseudo-labels and training options
    (recorded in its checkpoints), and for its SWA model the same SWA options."""

    opts: EnsembleOptions
    data: DataDigests

    def problem(self, job: Job, path: Path, ignore: tuple, record: dict | None = None) -> str | None:
        """Why ``path`` (a fold's SWA model or last checkpoint, its meta completed by the ``record`` beside it)
        cannot be reused, or None."""
        import models

        meta = {**models.read_checkpoint(path)["meta"], **(record or {})}
        stored = meta.get("data_fingerprint")
        if stored is not None and stored != self.data.train:
            return (f"it was made from other data than {self.opts.data_dir} (data fingerprint {stored}, now "
                    f"{self.data.train})")
        now = folds_digest(self.opts.folds_file)
        folds = meta.get("folds_digest", now)  # a file of a run that recorded none is taken as it is
        if folds != now:
            return (f"it was made with other folds than {self.opts.folds_file or 'the consecutive chunks'} now holds "
                    f"(folds digest {str(folds)[:12]}, now {str(now)[:12]})")
        labels = labels_of(job.fold, self.opts)
        why = pseudo_mismatch(meta, None if labels is None else pseudo_file_meta(labels))
        if why is not None:
            return why
        before = TrainConfig.from_checkpoint(meta, path)
        diff = before.differences(fold_config(job, self.opts), ignore=(*ignore, "pseudo_labels"))
        return f"it was made with other options ({few(diff, 3)})" if diff else None

    def check(self, job: Job, swa: dict) -> None:
        """Refuse (or, with ``overwrite``, clear) a fold whose files do not match what is asked now; an SWA model
        made with other SWA options (``swa``) is made again from the fold's models."""
        if job.swa.is_file():
            record = read_record(EnsembleLayout.stamp_of(job.swa)) or {}
            why = self.problem(job, job.swa, RUN_ONLY, {k: v for k, v in record.items() if k == "folds_digest"})
            if why is not None:
                return self.refuse(job, job.swa, why)
            if record == swa_record(job, self.opts, swa):
                return
            print(f"[{job.label}] {job.swa} is made again from the fold's models: "
                  f"{'other SWA options' if record else 'no record of its SWA options'}")
            job.swa.unlink()
            EnsembleLayout.stamp_of(job.swa).unlink(missing_ok=True)
        last = job.run.checkpoint("last")
        why = self.problem(job, last, RESUMABLE_CHANGES) if last.is_file() else None
        if why is not None:
            self.refuse(job, last, why)

    def refuse(self, job: Job, path: Path, why: str) -> None:
        if not self.opts.overwrite:
            raise UserError(f"{job.label}: {path} cannot be reused: {why}; rerun with --overwrite to train such folds "
                            f"afresh, or use another --run-dir")
        print(f"[{job.label}] --overwrite: {why}; training it afresh")
        clear(job)


def clear(job: Job) -> None:
    for p in [job.swa, EnsembleLayout.stamp_of(job.swa), *job.run.run_files()]:
        if p.exists():
            p.unlink()
