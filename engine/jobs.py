"""Folds as jobs of an established job library (submitit): on this machine, on a Slurm cluster, or in this process.

Each fold is one job. What submitit pickles is a :class:`FoldJob`: the fold's two :class:`Step` objects (train,
then swa: runs of the engine's job entry point :mod:`engine.fold_job`, whose typed options are the JSON file
written into the fold's job folder), its log file and its environment, and nothing else. Run, it skips a fold whose
SWA model exists, and its train step resumes from the fold's last checkpoint when there is one, so a job started
again (a retry, a requeue) goes on from where the fold stopped. The step's output is appended to the fold's log
(RUN/logs/MODE-FOLD.log); the ensemble process echoes it from there (:mod:`engine.watch`).

Executors (:func:`make_executor`; one per fold, its job files in RUN/jobs/MODE-FOLD):

- ``local``: submitit's LocalExecutor, a process per job on this machine; submitit starts every job at once, so
  :func:`schedule` submits at most one job per :class:`Place` (a GPU, or a share of the CPU cores);
- ``slurm``: submitit's SlurmExecutor, an sbatch job per fold (:class:`SlurmSettings`), ``torchrun`` inside when a
  fold has several GPUs; Slurm queues them;
- ``debug``: submitit's DebugExecutor, each fold in this process when its result is asked (tests, debugging).

Failures and pre-emption: a job that a time limit or a pre-emption interrupts (submitit's USR2 signal) is
checkpointed and requeued by submitit itself (FoldJob is a ``submitit.helpers.Checkpointable``; at most
``max_retries`` time-outs); a job that fails is submitted again by :func:`schedule`, at most ``max_retries`` times,
except when a step exited with code 2 (a user or data error: it would fail the same way). When a fold fails for
good, or this process is interrupted (Ctrl-C, SIGTERM), every running job is cancelled and waited for: no fold goes
on training unattended, and each resumes from its last checkpoint next time.

This module is imported by the job processes: it needs only the standard library, submitit and ``tgs.errors``.
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError
from submitit.helpers import Checkpointable
from submitit.local.debug import DebugJob
from submitit.local.local import LocalJob

from tgs.errors import UserError, excerpt

ROOT = Path(__file__).resolve().parents[1]  # where the scripts are
EXECUTORS = ("local", "slurm", "debug")
NO_TIME_LIMIT_MIN = 10 * 365 * 24 * 60  # submitit's local jobs are stopped after timeout_min (default: 2 minutes)
REFUSED = 2  # the exit code of a user or data error (tgs.errors): running the step again cannot help


class StepFailed(UserError):
    """A step of a job exited with an error: the message names the step, the fold, its last error line and its log."""


class StepRefused(StepFailed):
    """A step exited with code 2 (a user or data error): the same input fails the same way, so it is not retried."""


# -- steps: the engine's job entry point, run as a subprocess ---------------------------------------------------
ENTRY = "engine.fold_job"  # python -m ENTRY JOBFOLDER STEP: the one program a fold's job runs


@dataclass(frozen=True)
class Step:
    """``python [LAUNCHER] -m engine.fold_job FOLDER NAME``: the step NAME (train, swa) of the fold job whose typed
    options are written in FOLDER; the interpreter is the one running the job."""

    name: str  # train, swa
    folder: str  # the fold's job folder, holding its options (engine.fold_job.FoldSpec)
    launcher: tuple = ()  # e.g. ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")

    def command(self) -> list[str]:
        return [sys.executable, *self.launcher, "-m", ENTRY, self.folder, self.name]

    def describe(self) -> str:
        launcher = ["torchrun", *self.launcher[2:]] if self.launcher[:2] == ("-m", "torch.distributed.run") else []
        return shlex.join([*launcher, "-m", ENTRY, self.folder, self.name])


def torchrun(gpus: int) -> tuple:
    """The launcher of a step on ``gpus`` GPUs of one node (``--standalone``: a free port, so that two folds on a
    node do not meet at the same rendezvous)."""
    return ("-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}") if gpus > 1 else ()


def run_step(step: Step, label: str, log: Path, env: dict | None = None, echo: bool = True) -> None:
    """Run ``step`` as a subprocess; its output is appended to ``log`` (line by line, so that it can be followed)
    and, with ``echo``, printed with a ``[label]`` prefix. Interrupted here (Ctrl-C, a cancelled or requeued job),
    the subprocess is stopped too. A non-zero exit raises StepFailed (StepRefused for exit code 2)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = step.command()
    tail: deque[str] = deque(maxlen=50)
    with open(log, "a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace", env=environment({}) if env is None else env)
        try:
            for line in proc.stdout:
                fh.write(line)
                fh.flush()
                tail.append(line.rstrip("\n"))
                if echo:
                    print(f"[{label}] {line}", end="", flush=True)
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted here: stop the step too (it resumes next time)
                stop(proc)
    if rc != 0:
        kind = StepRefused if rc == REFUSED else StepFailed
        raise kind(f"the {step.name} step failed for {label} (exit {rc}): {_error_line(tail)}; full output in {log}")


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


def _error_line(lines) -> str:
    lines = [s for s in lines if s.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return lines[-1].strip() if lines else "no output"


# -- a fold as a job -----------------------------------------------------------------------------------------------
def environment(overrides: dict) -> dict:
    """This process's environment with ``overrides`` (a value of None removes the variable), and this package on
    PYTHONPATH (a step runs ``python -m engine.fold_job``, from whatever directory)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@dataclass
class FoldJob(Checkpointable):
    """One fold's job: its train step (which resumes from the fold's last checkpoint when there is one), then its
    swa step into ``output``; nothing to do when ``output`` exists. Checkpointable: a pre-empted or timed-out job
    is requeued by submitit and resumes."""

    label: str
    log: str
    train: Step
    swa: Step
    last: str  # the fold's last checkpoint
    output: str  # its SWA model
    env: dict = field(default_factory=dict)  # environment overrides for its steps (None: unset)
    runner: Callable = run_step  # (step, label, log, env, echo); tests run steps in-process

    def steps(self) -> list[Step]:
        """What a run started now does (empty: the fold is finished)."""
        return [] if Path(self.output).is_file() else [self.train, self.swa]

    def __call__(self) -> str:
        steps = self.steps()
        env = environment(self.env)
        for step in steps:
            self.runner(step, self.label, Path(self.log), env, False)
        return "done" if steps else "skipped"


# -- executors -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmSettings:
    """What each fold's sbatch job asks for."""

    partition: str | None = None
    gpus_per_fold: int = 1
    gpu_type: str | None = None  # e.g. a100: --gpus-per-node=a100:2
    cpus_per_fold: int | None = None
    time_min: int = 24 * 60
    mem: str | None = None  # Slurm's syntax: 64G, 500M
    extra: tuple = ()  # (key, value) pairs of further sbatch options; value True: a flag without a value

    def parameters(self) -> dict:
        """submitit's SlurmExecutor parameters."""
        gpus = f"{self.gpu_type}:{self.gpus_per_fold}" if self.gpu_type else self.gpus_per_fold
        out = {"time": self.time_min, "nodes": 1, "ntasks_per_node": 1, "partition": self.partition,
               "gpus_per_node": gpus if self.gpus_per_fold else None, "cpus_per_task": self.cpus_per_fold,
               "mem": self.mem, "additional_parameters": dict(self.extra) or None}
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> str:
        kind = f" {self.gpu_type}" if self.gpu_type else ""
        parts = [f"partition {self.partition}" if self.partition else "default partition",
                 f"{self.gpus_per_fold}{kind} GPU{'s' if self.gpus_per_fold != 1 else ''} per fold"]
        parts += [f"{self.cpus_per_fold} CPUs"] if self.cpus_per_fold else []
        parts += [f"time {self.time_min} min"] + ([f"memory {self.mem}"] if self.mem else [])
        parts += [f"--{k}" + ("" if v is True else f"={v}") for k, v in self.extra]
        return ", ".join(parts)


def check_executor(kind: str) -> None:
    """Refuse an executor that cannot work here (one line, before anything is submitted)."""
    if kind not in EXECUTORS:
        raise UserError(f"--executor {excerpt(kind)}: use {', '.join(EXECUTORS)}")
    if kind == "slurm" and submitit.SlurmExecutor.affinity() < 0:
        raise UserError("--executor slurm: no srun on PATH; run ensemble.py on a machine of the Slurm cluster "
                        "(or use --executor local)")


def make_executor(kind: str, folder: Path, max_retries: int, slurm: SlurmSettings | None = None, name: str = ""):
    """A submitit executor whose job files go to ``folder``; ``max_retries`` bounds submitit's requeues after a
    time-out."""
    check_executor(kind)
    if kind == "debug":
        return submitit.DebugExecutor(folder)
    if kind == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=max_retries)
        executor.update_parameters(timeout_min=NO_TIME_LIMIT_MIN)
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=max_retries)
    # the job unpickles its function by reference: this package must be importable on the node too
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    executor.update_parameters(job_name=name or "tgs-fold", setup=setup, **(slurm or SlurmSettings()).parameters())
    return executor


@contextlib.contextmanager
def _stderr_to(path: Path):
    """File descriptor 2 pointed at ``path`` while a local job's controller is started: the controller inherits
    this process's stderr, and one stopped by Ctrl-C or a cancel prints a KeyboardInterrupt traceback there."""
    sys.stderr.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


@contextlib.contextmanager
def _interruptible():
    """SIGINT not ignored while a local job is started: submitit cancels a local job with SIGINT, and a process
    started while SIGINT is ignored (ensemble.py run in the background, with ``&`` or nohup) would ignore it too."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)  # reset to the default in the started process
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def submit(executor, fn: Callable):
    """Submit ``fn``; the job process finds this package through PYTHONPATH (it unpickles ``fn`` by reference),
    whatever directory it runs in. A local job's controller starts with SIGINT handled (:func:`_interruptible`)
    and its stderr in the job folder (:func:`_stderr_to`)."""
    path = os.pathsep.join([str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    with submitit.helpers.environment_variables(PYTHONPATH=path):
        if not isinstance(executor, submitit.LocalExecutor):
            return executor.submit(fn)
        with _interruptible(), _stderr_to(Path(executor.folder) / "controller.err"):
            return executor.submit(fn)


# -- running many folds --------------------------------------------------------------------------------------------
@dataclass
class Place:
    """Where a job runs: a GPU, a share of the CPU cores, or a job of the cluster. ``env``: environment overrides
    for its steps; ``device`` and ``flags``: added to train.py's and swa.py's options."""

    name: str
    env: dict = field(default_factory=dict)
    device: str | None = None
    flags: tuple = ()


@dataclass
class Task:
    """A fold to run: its label, the executor its jobs go to and its job function for a place."""

    label: str
    log: Path
    executor: object
    build: Callable[[Place], Callable]


@dataclass
class Failure:
    message: str
    retry: bool


_STEP_ERROR = re.compile(r"^engine\.jobs\.(StepFailed|StepRefused): (.+)$", re.MULTILINE)


def failure(error: BaseException, task: Task, job) -> Failure:
    """What went wrong with a job, in one line: the failed step's own message when a step failed (from the job's
    traceback, which is all submitit keeps of an exception raised in another process), else what submitit says."""
    if isinstance(error, StepFailed):  # the debug executor: the exception itself
        return Failure(str(error), not isinstance(error, StepRefused))
    found = _STEP_ERROR.findall(str(error))
    if found:
        kind, message = found[-1]
        return Failure(message, kind == "StepFailed")
    paths = getattr(job, "paths", None)
    where = f"; job output in {paths.stdout} and {paths.stderr}" if paths is not None else ""
    return Failure(f"the job of {task.label} ended without finishing ({excerpt(_summary(error), 200)}); its log: "
                   f"{task.log}{where}", True)


def _summary(error: BaseException) -> str:
    """One line of what submitit says: the last line of the job's traceback (the exception) when it has one."""
    lines = [s.strip() for s in str(error).splitlines() if s.strip()]
    rules = [i for i, s in enumerate(lines) if set(s) == {"-"}]
    if len(rules) >= 2 and rules[-1] > rules[0] + 1:  # FailedJobError: the trace between two rules
        return lines[rules[-1] - 1]
    return lines[0] if lines else type(error).__name__


def outcome(job) -> tuple[bool, BaseException | None]:
    """(finished, its error or None). A debug job runs now, in this process (its exception is returned: asking
    for its result would open a debugger)."""
    if isinstance(job, DebugJob):
        return True, job.exception()
    if not job.done():
        return False, None
    return True, job.exception()


def _alive(job) -> bool:
    """A job that still has a process on this machine (only local jobs: Slurm stops its own)."""
    return isinstance(job, LocalJob) and not job.done()


@dataclass
class Running:
    task: Task
    place: Place
    job: object
    attempt: int = 1


def schedule(tasks: list[Task], places: list[Place], monitor, max_retries: int, poll_s: float = 1.0,
             stop_s: float = 60.0) -> None:
    """Run every task as a job, at most one per place at a time, in the order given. A failed job is submitted
    again (same place) up to ``max_retries`` times unless its step refused its input; a fold that fails for good,
    or an interruption of this process, cancels every running job and waits for them (at most ``stop_s`` seconds
    each) before the error goes on. ``monitor`` (engine.watch.Monitor) is told what starts and ends."""
    todo, free, running = deque(tasks), deque(places), []

    def start(task: Task, place: Place, attempt: int) -> Running:
        monitor.start(task.label, first=attempt == 1)
        try:
            job = submit(task.executor, task.build(place))
        except (FailedJobError, FailedSubmissionError) as exc:  # e.g. sbatch refused the job's options
            raise UserError(f"{task.label}: its job could not be submitted ({excerpt(_summary(exc), 200)})") from None
        return Running(task, place, job, attempt)

    try:
        while todo or running:
            while todo and free:
                running.append(start(todo.popleft(), free.popleft(), 1))
            for r in list(running):
                finished, error = outcome(r.job)
                if not finished:
                    continue
                if error is None:
                    running.remove(r)
                    free.append(r.place)
                    monitor.end(r.task.label, ok=True)
                    continue
                why = failure(error, r.task, r.job)
                if why.retry and r.attempt <= max_retries:
                    monitor.end(r.task.label, ok=False)
                    monitor.say(f"[{r.task.label}] {why.message}; trying again from its last checkpoint "
                                f"(attempt {r.attempt + 1} of {max_retries + 1})")
                    running[running.index(r)] = start(r.task, r.place, r.attempt + 1)
                    continue
                running.remove(r)
                monitor.end(r.task.label, ok=False)
                tries = f" ({r.attempt} attempts)" if r.attempt > 1 else ""
                raise (StepFailed if why.retry else StepRefused)(why.message + tries)
            monitor.update()
            if running and not any(isinstance(r.job, DebugJob) for r in running):
                time.sleep(poll_s)
    except BaseException:
        cancel(running, monitor, stop_s)
        raise


def cancel(running: list[Running], monitor, stop_s: float = 60.0) -> None:
    """Cancel every running job and wait until those on this machine have ended."""
    for r in running:
        monitor.say(f"stopping {r.task.label} (it resumes from its last checkpoint next time)")
        r.job.cancel(check=False)
    deadline = time.monotonic() + stop_s  # a bound on a hung job only
    while any(_alive(r.job) for r in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    monitor.update()
    for r in running:
        if _alive(r.job):
            monitor.say(f"{r.task.label} is still running after {stop_s:.0f} s: its job is {r.job.job_id}, its "
                        f"files are in {r.task.executor.folder}")
