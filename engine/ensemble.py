"""The ensemble runner behind ensemble.py: the 9th place's 20-model ensemble in one call.

For every input mode (pad: reflect-pad 101 -> ``pad_size``; resize: 101 -> ``resize_size``) and every fold, one job
of submitit (:mod:`engine.jobs`: on this machine, on a Slurm cluster, or in this process), several at a time where
the places allow (:func:`places`: one per GPU, N shares of the CPU cores, or the cluster's queue):

1. ``train.py`` into RUN/MODE/FOLD; a fold with a last checkpoint but no SWA model resumes (``torchrun`` when a
   Slurm fold has several GPUs);
2. ``swa.py`` into RUN/MODE/FOLD_swa.pth; a fold whose SWA model exists is finished and skipped next time,

while :mod:`engine.watch` echoes the folds' logs and shows how far they are and the time left; then, in this
process, with all the SWA models (:func:`ensemble_outputs`): out-of-fold predictions of each fold, merged and
scored; ``score.py --search`` on them (RUN/postprocess.json); ``test.py`` with flip TTA over every SWA model and
that post-processing; ``score.py --check`` of the submission. The file names are :class:`EnsembleLayout`'s.

A fold is reused (skipped or resumed) only when it was made from the same data (a fingerprint of the training
set) and the same training options as asked now; otherwise the run stops with one line saying what differs,
unless ``overwrite`` (then that fold's files are removed and it is trained afresh). Every fold is checked before
any job is submitted.

Self-training (``pseudo_rounds`` K > 0, the 1st place's rounds): after round r has predicted the test set,
pseudo-labels are chosen from its test predictions (:func:`next_labels`, :mod:`engine.pseudo`), and round r+1
trains every fold again with them, in RUN/round{r+1}/, then swa, out-of-fold, search and submission as before.
Every round's folder, out-of-fold score and submission are kept and the summary prints the score per round; a
rerun resumes inside the round where it stopped. ``pseudo_source='fold'`` keeps each fold's out-of-fold score
honest (its labels come from its own models only); ``'ensemble'`` says plainly that the score is optimistic.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from engine.config import TrainConfig
from engine.jobs import StepFailed  # noqa: F401  (raised by run(): a step failed)
from engine.jobs import (FoldJob, Place, SlurmSettings, Step, Task, check_executor, make_executor, run_step, schedule,
                         torchrun)
from engine.layout import EnsembleLayout, RunLayout
from engine.pseudo import file_meta as pseudo_file_meta
from engine.pseudo import mismatch as pseudo_mismatch
from engine.trainer import RESUMABLE_CHANGES
from engine.watch import FoldView, Monitor
from tgs import metric, mosaic_rules, postprocess
from tgs import probabilities as P
from tgs.errors import UserError, few
from tgs.io import FolderLock
from tgs.pseudo import Rule
from tgs.submission import match_ids

ROOT = Path(__file__).resolve().parents[1]  # where the scripts are
MODES = ("pad", "resize")
# options that never change a fold's result: a finished fold made with other values is still the same fold
RUN_ONLY = ("device", "threads", "dataload_workers_nums", "no_cache", "compile", "comment", "log_dir", "data_dir")
POLL_S = {"local": 0.5, "slurm": 10.0, "debug": 0.0}  # how often running jobs and their files are looked at


@dataclass(frozen=True)
class EnsembleOptions:
    data_dir: str
    run_dir: str
    folds: tuple
    modes: tuple = MODES
    folds_file: str | None = None
    pad_size: int = 128
    resize_size: int = 128
    train_args: tuple = ()
    swa_args: tuple = ()
    test_args: tuple = ()
    shared: dict = field(default_factory=dict)  # train options swa.py and test.py take too (device, threads, amp)
    tta: bool = True
    tuned_post: bool = True
    gpus: str = "auto"
    parallel: int = 0
    overwrite: bool = False
    dry_run: bool = False
    executor: str = "local"  # local, slurm, debug (engine.jobs)
    max_retries: int = 2
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    # self-training: rounds after round 0, where the next round's pseudo-labels come from, how they are chosen,
    # the train.py options of the rounds that use them, and (set per round here) the labels each fold trains on
    pseudo_rounds: int = 0
    pseudo_source: str = "fold"
    pseudo_rule: Rule = field(default_factory=Rule)
    pseudo_train: tuple = ()
    pseudo_labels: str | tuple | None = None  # one file for every fold, or ((fold, file), ...)
    # the jigsaw: build the mosaics once (RUN/mosaics), search and submit with mosaic rules, mosaic-aware folds
    mosaics: bool = False
    mosaic_folds: bool = False
    mosaics_csv: str | None = None  # set by run(): the file every round uses

    @property
    def layout(self) -> EnsembleLayout:
        return EnsembleLayout(Path(self.run_dir))


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


# -- running steps --------------------------------------------------------------------------------------------------
# Runs one step: (Step, label, log, env, echo). Tests replace it with an in-process runner; fold jobs take the one
# set when they are built.
RUNNER = run_step


def _run(script, argv, label, log, dry=False):
    step = Step(script, tuple(argv))
    if dry:
        print(f"[{label}] would run: {step.describe()}")
        return
    RUNNER(step, label, log, None, True)


def _shared_flags(opts: EnsembleOptions, skip=()) -> list[str]:
    out = []
    for key, value in opts.shared.items():
        if key not in skip:
            out += [f"--{key}", str(value)]
    return out


def labels_of(fold: str, opts: EnsembleOptions) -> str | None:
    """The pseudo-labels file ``fold`` trains on in this round (None in round 0)."""
    if opts.pseudo_labels is None or isinstance(opts.pseudo_labels, str):
        return opts.pseudo_labels
    return dict(opts.pseudo_labels)[fold]


def train_argv(job: Job, opts: EnsembleOptions) -> list[str]:
    """train.py's arguments for a fold (without --resume and the place's device/threads)."""
    size = opts.pad_size if job.mode == "pad" else opts.resize_size
    cmd = [*opts.train_args, "--data-dir", str(opts.data_dir), "--data-fold", job.fold, "--log-dir",
           str(job.run.root), "--input-size", str(size)]
    cmd += ["--resize"] if job.mode == "resize" else []
    cmd += ["--folds-file", opts.folds_file] if opts.folds_file else []
    labels = labels_of(job.fold, opts)
    if labels is not None:
        cmd += ["--pseudo-labels", labels, *opts.pseudo_train]
    return cmd


# -- reusing finished and interrupted folds -------------------------------------------------------------------------
@dataclass
class Reuse:
    """Decides whether a fold's files may be reused: same data fingerprint, same training options."""

    opts: EnsembleOptions
    config_of: Callable[[list[str]], TrainConfig]  # train.py's argv -> the config it would train with
    fingerprint: Callable[[], str]  # the training set's fingerprint (computed once, when first needed)
    _fp: str | None = None

    def data(self) -> str:
        if self._fp is None:
            self._fp = self.fingerprint()
        return self._fp

    def problem(self, job: Job, path: Path, ignore: tuple) -> str | None:
        """Why ``path`` (a fold's SWA model or last checkpoint) cannot be reused, or None."""
        import models

        meta = models.read_checkpoint(path)["meta"]
        stored = meta.get("data_fingerprint")
        if stored is not None and stored != self.data():
            return f"it was made from other data than {self.opts.data_dir} (data fingerprint {stored}, now {self.data()})"
        labels = labels_of(job.fold, self.opts)
        why = pseudo_mismatch(meta, None if labels is None else pseudo_file_meta(labels))
        if why is not None:
            return why
        before = TrainConfig.from_checkpoint(meta, path)
        diff = before.differences(self.config_of(train_argv(job, self.opts)), ignore=(*ignore, "pseudo_labels"))
        return f"it was made with other options ({few(diff, 3)})" if diff else None

    def check(self, job: Job) -> None:
        """Refuse (or, with ``overwrite``, clear) a fold whose files do not match what is asked now."""
        for path, ignore in ((job.swa, RUN_ONLY), (job.run.checkpoint("last"), RESUMABLE_CHANGES)):
            if not path.is_file():
                continue
            why = self.problem(job, path, ignore)
            if why is None:
                return
            if not self.opts.overwrite:
                raise UserError(f"{job.label}: {path} cannot be reused: {why}; rerun with --overwrite to train "
                                f"such folds afresh, or use another --run-dir")
            print(f"[{job.label}] --overwrite: {why}; training it afresh")
            clear(job)
            return


def clear(job: Job) -> None:
    for p in [job.swa, *job.run.run_files()]:
        if p.exists():
            p.unlink()


def visible_gpus(spec: str, device: str | None) -> list[str]:
    """GPU ids to run folds on in parallel (empty: none, or the device asked for is not 'auto'/'cuda')."""
    if spec == "none" or (device is not None and device not in ("auto", "cuda")):
        return []
    if spec != "auto":
        return [g.strip() for g in spec.split(",") if g.strip()]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def places(opts: EnsembleOptions, count: int) -> list[Place]:
    """Where ``count`` folds run, one job per place at a time.

    local: GPUs round-robin when 2+ are used (each job sees only its own: CUDA_VISIBLE_DEVICES), else ``parallel``
    processes sharing the cores (cores/N threads each unless ``threads`` is given), else one; slurm: ``parallel``
    jobs in the queue at once (default: every fold); debug: this process."""
    if opts.executor == "debug":
        return [Place("this process")]
    if opts.executor == "slurm":
        return [Place(f"Slurm job {i + 1}") for i in range(min(opts.parallel or count, count))]
    # submitit hides every GPU from a local job unless told; a job of its own keeps this process's view
    own = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    gpus = visible_gpus(opts.gpus, opts.shared.get("device"))
    n = opts.parallel or (len(gpus) if len(gpus) >= 2 else 1)
    if n < 2:
        return [Place("this machine", own)]
    if gpus:
        return [Place(f"GPU {gpus[i % len(gpus)]}", {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}, "cuda")
                for i in range(n)]
    threads = opts.shared.get("threads") or max(1, (os.cpu_count() or 1) // n)
    flags = () if "threads" in opts.shared else ("--threads", str(threads))
    return [Place(f"process {i + 1} ({threads} thread{'s' if threads != 1 else ''})",
                  {**own, "OMP_NUM_THREADS": str(threads)}, None, flags) for i in range(n)]


def fold_job(job: Job, opts: EnsembleOptions, place: Place) -> FoldJob:
    """The job function of a fold at a place: only its train.py and swa.py commands, log and environment."""
    device = ["--device", place.device] if place.device else []
    train = [*train_argv(job, opts), *device, *place.flags]
    swa = ["--input", str(job.run.models), "--output", str(job.swa), "--data-dir", str(opts.data_dir),
           "--data-fold", job.fold, *(["--folds-file", opts.folds_file] if opts.folds_file else []),
           *_shared_flags(opts, skip=("device",) if place.device else ()), *device, *place.flags, *opts.swa_args]
    gpus = opts.slurm.gpus_per_fold if opts.executor == "slurm" else 1
    return FoldJob(job.label, str(job.log), Step("train", tuple(train), torchrun(gpus)), Step("swa", tuple(swa)),
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


def run_folds(jobs: list[Job], opts: EnsembleOptions, reuse: Reuse | None = None) -> None:
    """Train and average every fold not finished yet (see the module docstring); ``reuse`` checks every fold before
    any job is submitted and gives the folds' number of epochs for the time left."""
    if not opts.dry_run:
        check_executor(opts.executor)  # e.g. no srun: said before anything is touched
    if reuse is not None and not opts.dry_run:
        for job in jobs:
            reuse.check(job)
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
        for job in todo:
            for step in fold_job(job, opts, where[0]).steps():
                print(f"[{job.label}] would run: {step.describe()}")
        return
    for job in todo:
        if job.run.checkpoint("last").is_file():
            print(f"[{job.label}] resuming training from {job.run.checkpoint('last')}")
    said = _where(opts, where, len(todo))
    if said:
        print(said)
    views = [FoldView(j.label, j.log, j.run.metrics, j.run.config, _epochs(j, opts, reuse),
                      "waiting" if j in todo else "done") for j in jobs]
    monitor = Monitor(views, len(where))
    try:
        schedule(tasks_of(todo, opts), where, monitor, opts.max_retries, POLL_S[opts.executor])
    finally:
        monitor.close()


def _epochs(job: Job, opts: EnsembleOptions, reuse: Reuse | None) -> int | None:
    """The fold's max_epochs as asked now (its config.yaml says it once it trains)."""
    return reuse.config_of(train_argv(job, opts)).optim.max_epochs if reuse is not None else None


# -- reruns: a step whose inputs did not change is not run again -----------------------------------------------------
def stamp(inputs, options) -> dict:
    """What a step is made from: each input file (path, size, modification time: a retrained fold rewrites its SWA
    model) and the step's options."""
    files = []
    for p in map(Path, inputs):
        st = p.stat()
        files.append([str(p), st.st_size, st.st_mtime_ns])
    return {"inputs": files, "options": [str(o) for o in options]}


def fresh(marker: Path, source: dict, outputs) -> bool:
    """True when every output exists and ``marker`` says they were made from ``source`` (a :func:`stamp`)."""
    import json

    if not marker.is_file() or not all(Path(o).is_file() for o in outputs):
        return False
    try:
        return json.loads(marker.read_text()) == source
    except ValueError:  # a damaged marker: make the outputs again
        return False


def made_from(opts: EnsembleOptions, swas, options) -> dict:
    """The :func:`stamp` of a step over a round's SWA models ``swas``: they, the test images' list and the mosaics
    are its input files."""
    from datasets.kaggle import Layout

    return stamp([*swas, Layout.of(opts.data_dir).sample_submission, *([opts.mosaics_csv] if opts.mosaics_csv else [])],
                 options)


def reused(marker: Path, source: dict, outputs, line: str) -> bool:
    """True (and ``line`` printed) when :func:`fresh`; else the stale ``marker`` goes, and the step runs."""
    if fresh(marker, source, outputs):
        print(line)
        return True
    marker.unlink(missing_ok=True)
    return False


def mark(marker: Path, source: dict) -> None:
    import json

    from tgs.io import atomic_open

    with atomic_open(marker, "w") as fh:
        json.dump(source, fh)


def ensemble_outputs(jobs: list[Job], opts: EnsembleOptions) -> dict:
    """Out-of-fold predictions, search, submission and its check (skipped when made from the same SWA models, test
    images and options: a rerun of a finished round redoes nothing, and its pseudo-labels stay the same)."""
    lay = opts.layout
    done = {"submission": lay.submission.csv, "probabilities": lay.submission.npz, "oof": lay.merged_oof.npz,
            "postprocess": lay.postprocess}
    source = None
    if not opts.dry_run:
        source = made_from(opts, [j.swa for j in jobs], [opts.data_dir, opts.folds_file, opts.tta, opts.tuned_post,
                                                         *_shared_flags(opts), *opts.test_args])
        wanted = [v for k, v in done.items() if k != "postprocess" or opts.tuned_post]
        if reused(lay.outputs_stamp, source, wanted, f"[outputs] the out-of-fold predictions, search and submission "
                                                     f"in {lay.root} were made from these models and options, reused"):
            return done
    data = ["--data-dir", str(opts.data_dir), *(["--folds-file", opts.folds_file] if opts.folds_file else [])]
    tta = ["--tta"] if opts.tta else []
    common = [*tta, *_shared_flags(opts), *opts.test_args]
    oof = []
    for fold in opts.folds:
        swas = [str(j.swa) for j in jobs if j.fold == fold]
        out = lay.oof(fold)
        _run("test", [*swas, "--split", "valid", "--data-fold", fold, *data, "--output-prefix", out.prefix, *common],
             f"oof/{fold}", lay.log("oof"), dry=opts.dry_run)
        oof.append(str(out.npz))
    merged = lay.merged_oof
    _run("test", ["--merge-oof", *oof, "--data-dir", str(opts.data_dir), "--output-prefix", merged.prefix,
                  *opts.test_args],
         "oof", lay.log("oof"), dry=opts.dry_run)
    # the search groups the out-of-fold images by the folds they were predicted in: a fold's own tiles, and every
    # mask its models never saw, are unknown to the mosaic rules. With mosaic folds a fold holds whole mosaics, so
    # the rules can hardly act out of fold and are (honestly) not kept: score.py says so
    search = ["--oof-folds", ",".join(opts.folds), *(["--folds-file", opts.folds_file] if opts.folds_file else [])]
    search += ["--mosaics", opts.mosaics_csv] if opts.mosaics_csv else []
    _run("score", ["--search", str(merged.npz), "--truth", str(Path(opts.data_dir) / "train.csv"),
                   "--save-best", str(lay.postprocess), *search],
         "search", lay.log("search"), dry=opts.dry_run)
    sub = lay.submission
    tuned = ["--post-config", str(lay.postprocess)] if opts.tuned_post else []
    tuned += ["--mosaics", opts.mosaics_csv] if opts.mosaics_csv and opts.tuned_post else []
    _run("test", [*[str(j.swa) for j in jobs], "--data-dir", str(opts.data_dir), "--output-prefix", sub.prefix,
                  *tuned, *common, "--message", f"ensemble of {len(jobs)} models ({','.join(opts.modes)} x "
                                                f"{len(opts.folds)} folds)"],
         "test", lay.log("test"), dry=opts.dry_run)
    _run("score", [str(sub.csv), "--check", str(opts.data_dir)], "check", lay.log("test"), dry=opts.dry_run)
    if source is not None:
        mark(lay.outputs_stamp, source)
    return done


# -- the jigsaw ---------------------------------------------------------------------------------------------------
def prepare_mosaics(opts: EnsembleOptions, fingerprint: Callable[[], str]) -> EnsembleOptions:
    """Build the mosaics once (``mosaic.py`` into RUN/mosaics; rebuilt only when the data's fingerprint changed) and,
    with ``mosaic_folds``, the mosaic-aware folds (RUN/folds.csv); returns the options that use them."""
    import json

    from datasets import folds as F
    from datasets.kaggle import Layout, load_train, read_sample_submission
    from tgs.io import atomic_open
    from tgs.mosaic import Mosaics

    if not opts.mosaics:
        return opts
    lay = opts.layout
    source = lay.mosaics / "source.json"
    if opts.dry_run:
        print(f"[mosaics] would run: mosaic.py --data-dir {opts.data_dir} --out {lay.mosaics}")
    else:
        stored = json.loads(source.read_text()) if source.is_file() else {}
        if lay.mosaics_csv.is_file() and stored.get("data_fingerprint") == fingerprint():
            print(f"[mosaics] {lay.mosaics_csv} exists for this data, reused")
        else:
            _run("mosaic", ["--data-dir", str(opts.data_dir), "--out", str(lay.mosaics)], "mosaics",
                 lay.log("mosaics"))
            with atomic_open(source, "w") as fh:
                json.dump({"data_dir": str(opts.data_dir), "data_fingerprint": fingerprint()}, fh)
    opts = replace(opts, mosaics_csv=str(lay.mosaics_csv))
    if not opts.mosaic_folds:
        return opts
    if not opts.dry_run and not lay.folds_csv.is_file():
        train = load_train(opts.data_dir)
        test = read_sample_submission(Layout.of(opts.data_dir).sample_submission)
        layout = Mosaics.read(lay.mosaics_csv, known_ids=np.concatenate([train.ids, test]))
        coverage = F.coverage_class(train.masks)
        folds = F.mosaic_folds(coverage, train.depths, F.mosaic_groups(train.ids, layout), F.CHUNKS, 0)
        F.write_folds(lay.folds_csv, train.ids, folds)
        crossing, total = F.crossing_pairs(train.ids, folds, layout)
        print(f"[folds] wrote {lay.folds_csv}: every mosaic's train tiles in one of {F.CHUNKS} folds "
              f"({crossing} of {total} train-train neighbour pairs across folds)")
    return replace(opts, folds_file=str(lay.folds_csv))


# -- self-training rounds -------------------------------------------------------------------------------------------
def round_options(opts: EnsembleOptions, r: int, labels) -> EnsembleOptions:
    """The options of round ``r``: round 0 is the run itself; round r >= 1 trains every fold again, into
    RUN/round{r}/, with ``labels`` (one file, or one per fold)."""
    if r == 0:
        return opts
    return replace(opts, run_dir=str(opts.layout.round(r).root), pseudo_labels=labels)


def post_setting(opts: EnsembleOptions) -> tuple:
    """The post-processing the round's submission used: its out-of-fold search's, or the defaults."""
    lay = opts.layout
    if opts.tuned_post and lay.postprocess.is_file():
        return postprocess.load_setting(lay.postprocess)[0], str(lay.postprocess)
    return postprocess.DEFAULTS, "defaults"


def next_labels(jobs: list[Job], opts: EnsembleOptions):
    """Pseudo-labels for the next round from this round's test predictions.

    ``ensemble`` (the 1st place's way): one file from the whole ensemble's submission. Every fold's models trained
    on the other folds' validation images, so the next round's out-of-fold score is optimistic.
    ``fold``: for each fold, the test predictions of that fold's own models only (they never saw its validation
    images), post-processed with the defaults (the searched setting was chosen on every fold's truth) and the mosaic
    rules that the search chose without this fold (``rules_by_fold``), its validation tiles unknown to them, so the
    next round's out-of-fold score of that fold stays honest. Labels made from the same models and options are
    kept as they are. Returns a path or ((fold, path), ...)."""
    from engine import pseudo as pseudo_engine

    lay = opts.layout
    if opts.dry_run:
        return str(lay.pseudo_labels) if opts.pseudo_source == "ensemble" else tuple(
            (f, str(lay.fold_pseudo_labels(f))) for f in opts.folds)
    if opts.pseudo_source == "ensemble":
        post, source = post_setting(opts)
        labels_from = made_from(opts, [j.swa for j in jobs], [opts.pseudo_rule, post])
        if _labels_reused(lay.pseudo_labels, labels_from):
            return str(lay.pseudo_labels)
        pseudo_engine.make(lay.submission.npz, opts.data_dir, lay.pseudo_labels, post=post, rule=opts.pseudo_rule,
                           post_source=source, mosaics=opts.mosaics_csv)
        mark(lay.stamp_of(lay.pseudo_labels), labels_from)
        return str(lay.pseudo_labels)
    by_fold = {}
    if opts.mosaics_csv and opts.tuned_post and opts.layout.postprocess.is_file():
        by_fold = postprocess.load_setting(opts.layout.postprocess)[1].rules_by_fold or {}
    from datasets.folds import split
    from datasets.kaggle import load_train

    train_ids = load_train(opts.data_dir).ids
    out = []
    for fold in opts.folds:
        prefix = lay.fold_test(fold)
        swas = [str(j.swa) for j in jobs if j.fold == fold]
        tta = ["--tta"] if opts.tta else []
        rules = mosaic_rules.parse_rules(by_fold.get(fold, ()), f"{opts.layout.postprocess}: rules_by_fold")
        labels_from = made_from(opts, swas, [opts.pseudo_rule, rules, opts.folds_file, *tta, *_shared_flags(opts),
                                             *opts.test_args])
        out.append((fold, str(lay.fold_pseudo_labels(fold))))
        if _labels_reused(lay.fold_pseudo_labels(fold), labels_from):
            continue
        _run("test", [*swas, "--data-dir", str(opts.data_dir), "--output-prefix", prefix.prefix, *tta,
                      *_shared_flags(opts), *opts.test_args], f"pseudo/{fold}", lay.log("pseudo"))
        _, valid = split(train_ids, fold, opts.folds_file)
        # the defaults, and the mosaic rules that the search chose without this fold's truth; its tiles unknown
        post = replace(postprocess.DEFAULTS, rules=rules)
        pseudo_engine.make(prefix.npz, opts.data_dir, lay.fold_pseudo_labels(fold), rule=opts.pseudo_rule,
                           post=post, mosaics=opts.mosaics_csv, unknown_ids=train_ids[valid],
                           post_source=f"defaults{' + the mosaic rules ' + ','.join(rules) if rules else ''} (the "
                                       f"labels of {fold} see no setting searched on its truth, and none of its "
                                       "tiles' masks)")
        mark(lay.stamp_of(lay.fold_pseudo_labels(fold)), labels_from)
    return tuple(out)


def _labels_reused(path: Path, source: dict) -> bool:
    """True (and said) when the pseudo-labels ``path`` were made from the same models and options: a rerun keeps
    them byte for byte, so the next round's finished folds, trained on them, stay reusable."""
    return reused(EnsembleLayout.stamp_of(path), source, [path],
                  f"[pseudo] {path} was made from these models and options, reused")


def oof_score(opts: EnsembleOptions) -> tuple[float, float | None]:
    """A round's merged out-of-fold score with the default post-processing, and the nested estimate of its
    submission's post-processing (the search's default score plus the held-out gains of its setting and of the
    mosaic rules: every fold scored with what was chosen on the other folds); None without a search."""
    from datasets.kaggle import load_train

    merged = P.load(opts.layout.merged_oof.npz)
    train = load_train(opts.data_dir)
    rows = match_ids(merged.ids, train.ids, str(opts.layout.merged_oof.npz), "train.csv", subset=True)
    masks = postprocess.apply(merged.probs[rows], merged.image_probs[rows],
                              train.images[np.isin(train.ids, merged.ids)], postprocess.DEFAULTS)
    default = metric.score(masks, train.masks[np.isin(train.ids, merged.ids)])
    if not (opts.tuned_post and opts.layout.postprocess.is_file()):
        return default, None
    setting, info = postprocess.load_setting(opts.layout.postprocess)
    gains = [info.chosen_held_out_gain, info.rules_held_out_gain if setting.rules else 0.0]
    if any(g is None for g in gains):
        return default, None
    return default, (default if info.default_score is None else info.default_score) + sum(gains)


def summary_lines(scores: list[tuple[int, tuple[float, float | None], Path]], source: str) -> list[str]:
    out = ["self-training rounds (out-of-fold score with the default post-processing; with the submission's, nested "
           "estimate; submission):"]
    for r, (default, nested), sub in scores:
        kind = ""
        if r > 0:
            kind = ("  honest: each fold's pseudo-labels came from its own models" if source == "fold" else
                    "  OPTIMISTIC: the pseudo-labels came from every fold's models, which trained on this fold's "
                    "validation images")
        tuned = f"{nested:.6f}" if nested is not None else "-"
        out.append(f"  round {r}: {default:.6f}  {tuned}  {sub}{kind}")
    return out


def _once(fn):
    """``fn()`` computed at the first call only."""
    cache = []

    def get():
        if not cache:
            cache.append(fn())
        return cache[0]

    return get


def run(opts: EnsembleOptions, config_of: Callable[[list[str]], TrainConfig] | None = None) -> int:
    """The whole ensemble (see the module docstring). ``config_of(train_argv)`` gives the config train.py would
    use (from the CLI layer); without it, folds are reused without checking their options."""
    from datasets.kaggle import Layout

    Layout.of(opts.data_dir).require("train_csv", "train_images", "train_masks", "sample_submission", "test_images")
    print(f"ensemble of {len(jobs_of(opts))} models: modes {','.join(opts.modes)} x folds {','.join(opts.folds)} "
          f"in {opts.run_dir}")
    if not opts.dry_run:
        check_executor(opts.executor)  # e.g. no srun: said before anything is touched
    lock = None if opts.dry_run else FolderLock(opts.run_dir, "--run-dir")  # one ensemble.py per run folder
    try:
        return _rounds(opts, config_of)
    finally:
        if lock is not None:
            lock.release()


def _rounds(opts: EnsembleOptions, config_of) -> int:
    from datasets.kaggle import load_train

    fingerprint = _once(lambda: load_train(opts.data_dir).fingerprint())
    opts = prepare_mosaics(opts, fingerprint)
    labels, scores = None, []
    for r in range(opts.pseudo_rounds + 1):
        ropts = round_options(opts, r, labels)
        if opts.pseudo_rounds:
            print(f"== round {r} of {opts.pseudo_rounds}" + (f": pseudo-labels {ropts.pseudo_labels}" if r else ""))
        jobs = jobs_of(ropts)
        reuse = None if config_of is None else Reuse(ropts, config_of, fingerprint)
        run_folds(jobs, ropts, reuse)
        out = ensemble_outputs(jobs, ropts)
        if not opts.dry_run:
            print(f"out-of-fold predictions: {out['oof']}")
            print(f"submission: {out['submission']} (probabilities: {out['probabilities']})")
            if opts.pseudo_rounds:
                scores.append((r, oof_score(ropts), out["submission"]))
        if r < opts.pseudo_rounds:
            labels = next_labels(jobs, ropts)
    if scores:
        print("\n".join(summary_lines(scores, opts.pseudo_source)))
    return 0
