"""The ensemble runner behind ensemble.py: the 9th place's 20-model ensemble in one call.

For every input mode (pad: reflect-pad 101 -> ``pad_size``; resize: 101 -> ``resize_size``) and every fold, one
after another or several at a time (:func:`run_folds`):

1. ``train.py`` into RUN/MODE/FOLD (a subprocess per fold); a fold with a last checkpoint but no SWA model resumes;
2. ``swa.py`` into RUN/MODE/FOLD_swa.pth; a fold whose SWA model exists is finished and skipped next time,

then, with all the SWA models (:func:`ensemble_outputs`): out-of-fold predictions of each fold, merged and
scored; ``score.py --search`` on them (RUN/postprocess.json); ``test.py`` with flip TTA over every SWA model and
that post-processing; ``score.py --check`` of the submission. The file names are :class:`EnsembleLayout`'s.

A fold is reused (skipped or resumed) only when it was made from the same data (a fingerprint of the training
set) and the same training options as asked now; otherwise the run stops with one line saying what differs,
unless ``overwrite`` (then that fold's files are removed and it is trained afresh).
"""
from __future__ import annotations

import os
import queue
import shlex
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engine.config import TrainConfig
from engine.layout import EnsembleLayout, RunLayout
from engine.trainer import RESUMABLE_CHANGES
from tgs.errors import UserError, few

ROOT = Path(__file__).resolve().parents[1]  # where the scripts are
MODES = ("pad", "resize")
# options that never change a fold's result: a finished fold made with other values is still the same fold
RUN_ONLY = ("device", "threads", "dataload_workers_nums", "no_cache", "compile", "comment", "log_dir", "data_dir")


class StepFailed(UserError):
    """A subprocess step exited with an error: the message names the step, its last error line and its log."""


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


def jobs_of(opts: EnsembleOptions) -> list[Job]:
    return [Job(mode, fold, opts.layout) for mode in opts.modes for fold in opts.folds]


# -- running steps --------------------------------------------------------------------------------------------------
_print_lock = threading.Lock()


def run_script(script: str, argv: list[str], label: str, log: Path, env: dict | None = None,
               procs: dict | None = None) -> None:
    """Run ``python ROOT/script.py argv`` as a subprocess; its output is echoed with a ``[label]`` prefix and
    appended to ``log``. A non-zero exit raises StepFailed naming the step, its error line and the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / f"{script}.py"), *argv]
    tail: deque[str] = deque(maxlen=50)
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                env=env)
        if procs is not None:
            procs[label] = proc
        try:
            for line in proc.stdout:
                fh.write(line)
                tail.append(line.rstrip("\n"))
                with _print_lock:
                    print(f"[{label}] {line}", end="", flush=True)
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted here: stop the step too (it resumes next time)
                stop(proc)
            if procs is not None:
                procs.pop(label, None)
    if rc != 0:
        raise StepFailed(f"{script}.py failed for {label} (exit {rc}): {_error_line(tail)}; full output in {log}")


def stop(*procs: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM to all, then SIGKILL to those still running after ``grace`` seconds (checkpoints are written
    atomically either way)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_all(procs: dict) -> None:
    running = [(label, proc) for label, proc in list(procs.items()) if proc.poll() is None]
    for label, _ in running:
        print(f"stopping {label} (it resumes from its last checkpoint next time)", flush=True)
    stop(*(proc for _, proc in running))


def _error_line(lines) -> str:
    lines = [s for s in lines if s.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1].strip() if lines else "no output"


# Tests replace this with an in-process runner; it takes (script, argv, label, log, env, procs).
RUNNER = run_script


def _run(script, argv, label, log, env=None, procs=None, dry=False):
    if dry:
        print(f"[{label}] would run: {shlex.join([script + '.py', *argv])}")
        return
    RUNNER(script, argv, label, log, env, procs)


def _shared_flags(opts: EnsembleOptions, skip=()) -> list[str]:
    out = []
    for key, value in opts.shared.items():
        if key not in skip:
            out += [f"--{key}", str(value)]
    return out


@dataclass
class Slot:
    """Where a fold runs: its environment, ``--device`` and extra options for train.py and swa.py."""

    name: str
    env: dict | None = None
    device: str | None = None
    flags: tuple = ()


def train_argv(job: Job, opts: EnsembleOptions) -> list[str]:
    """train.py's arguments for a fold (without --resume and the slot's device/threads)."""
    size = opts.pad_size if job.mode == "pad" else opts.resize_size
    cmd = [*opts.train_args, "--data-dir", str(opts.data_dir), "--data-fold", job.fold, "--log-dir",
           str(job.run.root), "--input-size", str(size)]
    cmd += ["--resize"] if job.mode == "resize" else []
    cmd += ["--folds-file", opts.folds_file] if opts.folds_file else []
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
        before = TrainConfig.from_checkpoint(meta, path)
        diff = before.differences(self.config_of(train_argv(job, self.opts)), ignore=ignore)
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


def train_and_average(job: Job, opts: EnsembleOptions, reuse: Reuse | None, slot: Slot | None = None,
                      procs=None) -> str:
    """Train (or resume) and average one fold; returns what was done."""
    if reuse is not None and not opts.dry_run:
        reuse.check(job)
    if job.swa.is_file():
        print(f"[{job.label}] finished: {job.swa} exists, skipped")
        return "skipped"
    slot = slot or Slot("this process")
    cmd = train_argv(job, opts)
    cmd += ["--device", slot.device] if slot.device else []
    cmd += list(slot.flags)
    last = job.run.checkpoint("last")
    resumed = last.is_file()
    if resumed:
        cmd += ["--resume", str(last)]
        print(f"[{job.label}] resuming training from {last}")
    _run("train", cmd, job.label, job.log, slot.env, procs, opts.dry_run)
    swa = ["--input", str(job.run.models), "--output", str(job.swa), "--data-dir", str(opts.data_dir),
           "--data-fold", job.fold, *(["--folds-file", opts.folds_file] if opts.folds_file else []),
           *_shared_flags(opts, skip=("device",) if slot.device else ()),
           *(["--device", slot.device] if slot.device else []), *slot.flags, *opts.swa_args]
    _run("swa", swa, job.label, job.log, slot.env, procs, opts.dry_run)
    return "resumed" if resumed else "trained"


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


def slots(opts: EnsembleOptions) -> list[Slot]:
    """Where folds run at the same time: GPUs round-robin when 2+ are used, else CPU processes sharing the cores
    (empty: one fold after another, in this environment)."""
    gpus = visible_gpus(opts.gpus, opts.shared.get("device"))
    n = opts.parallel or (len(gpus) if len(gpus) >= 2 else 1)
    if n < 2:
        return []
    if gpus:
        return [Slot(f"GPU {gpus[i % len(gpus)]}", {**os.environ, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]},
                     "cuda") for i in range(n)]
    threads = opts.shared.get("threads") or max(1, (os.cpu_count() or 1) // n)
    flags = () if "threads" in opts.shared else ("--threads", str(threads))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return [Slot(f"process {i + 1} ({threads} thread{'s' if threads != 1 else ''})", env, None, flags)
            for i in range(n)]


def run_folds(jobs: list[Job], opts: EnsembleOptions, reuse: Reuse | None = None) -> None:
    places = slots(opts) if not opts.dry_run else []
    if not places:
        for job in jobs:
            train_and_average(job, opts, reuse)
        return
    if reuse is not None:  # every fold is checked before any starts
        for job in jobs:
            reuse.check(job)
    print(f"running {len(places)} folds at a time: {', '.join(s.name for s in places)}")
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    failures: list[BaseException] = []
    procs: dict = {}
    halt = threading.Event()

    def worker(slot: Slot):
        while not halt.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                train_and_average(job, opts, None, slot, procs=procs)
            except BaseException as exc:  # noqa: BLE001
                if not halt.is_set():
                    failures.append(exc)
                halt.set()
                stop_all(procs)  # stop the other folds: they resume next time
                return

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in places]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C or SIGTERM here: no fold may go on training without this process
        halt.set()
        stop_all(procs)
        for t in threads:  # their steps have ended: let them finish before the interpreter exits
            t.join(timeout=60)
        raise
    if failures:
        raise failures[0]


def ensemble_outputs(jobs: list[Job], opts: EnsembleOptions) -> dict:
    lay = opts.layout
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
    _run("score", ["--search", str(merged.npz), "--truth", str(Path(opts.data_dir) / "train.csv"),
                   "--save-best", str(lay.postprocess)],
         "search", lay.log("search"), dry=opts.dry_run)
    sub = lay.submission
    tuned = ["--post-config", str(lay.postprocess)] if opts.tuned_post else []
    _run("test", [*[str(j.swa) for j in jobs], "--data-dir", str(opts.data_dir), "--output-prefix", sub.prefix,
                  *tuned, *common, "--message", f"ensemble of {len(jobs)} models ({','.join(opts.modes)} x "
                                                f"{len(opts.folds)} folds)"],
         "test", lay.log("test"), dry=opts.dry_run)
    _run("score", [str(sub.csv), "--check", str(opts.data_dir)], "check", lay.log("test"), dry=opts.dry_run)
    return {"submission": sub.csv, "probabilities": sub.npz, "oof": merged.npz, "postprocess": lay.postprocess}


def run(opts: EnsembleOptions, config_of: Callable[[list[str]], TrainConfig] | None = None) -> int:
    """The whole ensemble (see the module docstring). ``config_of(train_argv)`` gives the config train.py would
    use (from the CLI layer); without it, folds are reused without checking their options."""
    from datasets.kaggle import Layout, load_train

    Layout.of(opts.data_dir).require("train_csv", "train_images", "train_masks", "sample_submission", "test_images")
    jobs = jobs_of(opts)
    print(f"ensemble of {len(jobs)} models: modes {','.join(opts.modes)} x folds {','.join(opts.folds)} "
          f"in {opts.run_dir}")
    reuse = None if config_of is None else Reuse(opts, config_of, lambda: load_train(opts.data_dir).fingerprint())
    run_folds(jobs, opts, reuse)
    out = ensemble_outputs(jobs, opts)
    if not opts.dry_run:
        print(f"out-of-fold predictions: {out['oof']}")
        print(f"submission: {out['submission']} (probabilities: {out['probabilities']})")
    return 0
