"""Training every fold as a job: the fold's typed job (:func:`fold_spec`, written into its job folder and run by
:mod:`engine.fold_job`), one task per fold, scheduled on the places (:mod:`engine.jobs`), while
:mod:`engine.watch` shows how far they are."""
from __future__ import annotations

import sys

from engine.ensemble.naming import Job, fold_config
from engine.ensemble.options import POLL_S, EnsembleOptions
from engine.ensemble.places import overrides, places
from engine.ensemble.reuse import DataDigests, FoldReuse, swa_record
from engine.fold_job import FoldSpec
from engine.jobs import FoldJob, Place, Step, Task, check_executor, make_executor, run_step, schedule, torchrun
from engine.watch import FoldView, Monitor

# Runs one step of a fold: (Step, label, log, env, echo). Tests replace it with an in-process runner; fold jobs take
# the one set when they are built.
RUNNER = run_step


def swa_options(job: Job, opts: EnsembleOptions, place: Place) -> dict:
    """engine.swa.SwaOptions's fields of a fold: its models, output, data and fold; the shared options, the place's,
    then the ones given for SWA."""
    return {"inputs": [str(job.run.models)], "output": str(job.swa), "data_dir": str(opts.data_dir),
            "data_fold": job.fold, "folds_file": opts.folds_file,
            **{k: v for k, v in opts.shared.items() if not (k == "device" and place.device)}, **overrides(place),
            **opts.swa}


def fold_spec(job: Job, opts: EnsembleOptions, place: Place) -> FoldSpec:
    """What a fold's job does at ``place``, as plain data (a dry run's, without the SWA model's record: the inputs
    it would digest may not exist yet)."""
    train = fold_config(job, opts, **overrides(place)).to_dict(repeated_only=False)
    swa = swa_options(job, opts, place)
    record = {} if opts.dry_run else swa_record(job, opts, swa)
    return FoldSpec(job.label, train, swa, str(job.run.checkpoint("last")), record)


def fold_job(job: Job, opts: EnsembleOptions, place: Place) -> FoldJob:
    """The job function of a fold at a place: its typed job written into its job folder, its two steps, log and
    environment."""
    fold_spec(job, opts, place).write(job.job_files)
    gpus = opts.slurm.gpus_per_fold if opts.executor == "slurm" else 1
    folder = str(job.job_files)
    return FoldJob(job.label, str(job.log), Step("train", folder, torchrun(gpus)), Step("swa", folder),
                   str(job.run.checkpoint("last")), str(job.swa), dict(place.env), RUNNER)


def tasks_of(todo: list[Job], opts: EnsembleOptions) -> list[Task]:
    """One task per fold, each with its own executor (its job files in RUN/jobs/MODE-FOLD)."""
    def executor(job: Job):
        return make_executor(opts.executor, job.job_files, opts.max_retries, opts.slurm, f"tgs-{job.mode}-{job.fold}")

    return [Task(job.label, job.log, executor(job), lambda place, job=job: fold_job(job, opts, place)) for job in todo]


def _where(opts: EnsembleOptions, where: list[Place], count: int) -> str:
    jobs = f"job files in {opts.layout.jobs}"
    if opts.executor == "slurm":
        return (f"submitting {count} fold{'s' if count != 1 else ''} to Slurm ({opts.slurm.describe()}), at most "
                f"{len(where)} at a time; {jobs}")
    if len(where) > 1:
        return f"running {len(where)} folds at a time: {', '.join(p.name for p in where)}; {jobs}"
    return ""


def dry_run(todo: list[Job], opts: EnsembleOptions, where: list[Place]) -> None:
    """What each fold's job would do (its typed steps), written nowhere."""
    gpus = opts.slurm.gpus_per_fold if opts.executor == "slurm" else 1
    for job in todo:
        spec = fold_spec(job, opts, where[0])
        for step in ("train", "swa"):
            launcher = f"torchrun x{gpus}: " if step == "train" and gpus > 1 else ""
            print(f"[{job.label}] would run: {launcher}{spec.describe(step)}")


def run_folds(jobs: list[Job], opts: EnsembleOptions, data: DataDigests | None = None) -> None:
    """Train and average every fold not finished yet; every fold is checked (:class:`FoldReuse`) before any job is
    submitted."""
    if not opts.dry_run:
        check_executor(opts.executor)  # e.g. no srun: said before anything is touched
        reuse = FoldReuse(opts, data or DataDigests(str(opts.data_dir)))
        where = places(opts, len(jobs))
        for job in jobs:
            reuse.check(job, swa_options(job, opts, where[0]))
    todo = []
    for job in jobs:
        if job.swa.is_file():
            print(f"[{job.label}] finished: {job.swa} exists, skipped")
        else:
            todo.append(job)
    if not todo:
        return
    where = places(opts, len(todo))
    if opts.dry_run:
        return dry_run(todo, opts, where)
    for job in todo:
        if job.run.checkpoint("last").is_file():
            print(f"[{job.label}] resuming training from {job.run.checkpoint('last')}")
    said = _where(opts, where, len(todo))
    if said:
        print(said)
    views = [FoldView(j.label, j.log, j.run.metrics, j.run.config, fold_config(j, opts).optim.max_epochs,
                      "waiting" if j in todo else "done") for j in jobs]
    monitor = Monitor(views, len(where))
    try:
        schedule(tasks_of(todo, opts), where, monitor, opts.max_retries, POLL_S[opts.executor])
    finally:
        monitor.close()
        sys.stdout.flush()
