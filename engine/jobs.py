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
import io
import os
import re
import shlex
import shutil
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
from submitit.core.core import PicklingExecutor
from submitit.core.utils import DelayedSubmission, FailedJobError, FailedSubmissionError
from submitit.helpers import Checkpointable
from submitit.local.debug import DebugJob
from submitit.local.local import LocalJob

from tgs.errors import UserError, excerpt, few
from tgs.registry import Registry

ROOT = Path(__file__).resolve().parents[1]  # where the scripts are
EXECUTORS = Registry("executor")  # filled below, next to each executor's builder
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
    gpus_per_fold: int = 1  # ensemble.py asks for none when its folds train with --device cpu
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
        parts += [f"{self.cpus_per_fold} CPU{'s' if self.cpus_per_fold != 1 else ''}"] if self.cpus_per_fold else []
        parts += [f"time {self.time_min} min"] + ([f"memory {self.mem}"] if self.mem else [])
        parts += [f"--{k}" + ("" if v is True else f"={v}") for k, v in self.extra]
        return ", ".join(parts)


def check_executor(kind: str) -> None:
    """Refuse an executor that cannot work here (one line, before anything is submitted)."""
    entry = EXECUTORS.get(kind)
    lacking = [tool for tool in entry.tools if shutil.which(tool) is None]
    if lacking:
        raise UserError(f"--executor {kind}: no {lacking[0]} on PATH; run ensemble.py on a machine of the Slurm "
                        "cluster (or use --executor local)")


# the job process: submitit's own runner (submitit.core._submit) with job_main's additions
JOB_MAIN = "import sys; from engine.jobs import job_main; job_main(sys.argv[1])"
PARENT_ENV = "TGS_ENSEMBLE_PARENT"  # PID:START of the ensemble process a local job dies with


class _JobMain:
    """An executor whose job processes run :func:`job_main` (instead of ``python -m submitit.core._submit``)."""

    @property
    def _submitit_command_str(self) -> str:
        return " ".join([self.python, "-u", "-c", shlex.quote(JOB_MAIN), shlex.quote(str(self.folder))])


class LocalFolds(_JobMain, submitit.LocalExecutor):
    """submitit's LocalExecutor; its jobs run :func:`job_main` (they end with the ensemble process)."""


class SlurmFolds(_JobMain, submitit.SlurmExecutor):
    """submitit's SlurmExecutor; its jobs run :func:`job_main` (a SIGTERM ends them without a result)."""


def make_executor(kind: str, folder: Path, max_retries: int, slurm: SlurmSettings | None = None, name: str = ""):
    """A submitit executor whose job files go to ``folder`` (made absolute); ``max_retries`` bounds submitit's
    requeues after a time-out (:func:`schedule` lowers it as a fold's retries are spent)."""
    check_executor(kind)
    return EXECUTORS.get(kind).obj(Path(folder).absolute(), max_retries, slurm, name)


@EXECUTORS.register("local", help="this machine: a job per GPU, or --parallel N CPU processes", tools=(), poll_s=0.5)
def _local(folder: Path, max_retries: int, slurm: SlurmSettings | None, name: str):
    executor = LocalFolds(folder, max_num_timeout=max_retries)
    executor.update_parameters(timeout_min=NO_TIME_LIMIT_MIN)
    return executor


@EXECUTORS.register("slurm", help="one sbatch job per fold on a Slurm cluster", tools=("srun", "sbatch"),
                    poll_s=10.0)
def _slurm(folder: Path, max_retries: int, slurm: SlurmSettings | None, name: str):
    """A Slurm job runs in this process's working directory (sbatch --chdir), whatever the cluster's default."""
    executor = SlurmFolds(folder, max_num_timeout=max_retries)
    # the job unpickles its function by reference: this package must be importable on the node too
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    params = (slurm or SlurmSettings()).parameters()
    params["additional_parameters"] = {**params.get("additional_parameters", {}), "chdir": os.getcwd()}
    executor.update_parameters(job_name=name or "tgs-fold", setup=setup, **params)
    return executor


@EXECUTORS.register("debug", help="every fold in this process, one after another", tools=(), poll_s=0.0)
def _debug(folder: Path, max_retries: int, slurm: SlurmSettings | None, name: str):
    return submitit.DebugExecutor(folder)


# -- inside a job ----------------------------------------------------------------------------------------------------
def job_main(folder: str) -> None:
    """A fold's job process: submitit's ``process_job`` with three additions.

    - A SIGTERM ends the job *without a result*: its running step is stopped (see :func:`run_step`), then a Slurm
      job waits for Slurm to kill it (at most :data:`LINGER_S`). Slurm sends SIGTERM when it requeues the job
      (``scontrol requeue``, a pre-emption), when a user cancels it and at its time limit, and kills it after
      KillWait or the partition's GraceTime: Slurm's state then says what happened (a job that ended by itself
      during a pre-emption's grace time would be FAILED instead of requeued), and a requeued job stays the fold's
      one job. submitit alone would bypass the signal, let the step fail and write a failure, and the ensemble
      would submit a copy while Slurm restarts the original.
    - A result left by an earlier run of the same job id (a requeued job) is removed when the job starts.
    - A local job whose ensemble process is gone (even by SIGKILL) stops itself (:func:`_watch_parent`)."""
    from submitit.core import job_environment, submission

    handle_signals = job_environment.JobEnvironment._handle_signals

    def handle(env, paths, delayed):
        handle_signals(env, paths, delayed)
        signal.signal(signal.SIGTERM, _terminated)
        with contextlib.suppress(FileNotFoundError):
            paths.result_pickle.unlink()

    job_environment.JobEnvironment._handle_signals = handle
    if os.environ.get(PARENT_ENV):
        _watch_parent(os.environ[PARENT_ENV])
    try:
        submission.process_job(folder)
    except SystemExit:
        if _TERMINATED.is_set() and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":  # not a local job in an allocation
            print(f"engine.jobs: step stopped; waiting for Slurm to end this job (at most {LINGER_S} s)",
                  file=sys.stderr, flush=True)
            time.sleep(LINGER_S)  # a user signal (a pre-emption's USR2) still checkpoints and requeues meanwhile
        raise


LINGER_S = 3600  # a Slurm job that got SIGTERM waits this long at most for Slurm's SIGKILL
_TERMINATED = threading.Event()


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the step is being stopped
    _TERMINATED.set()
    print("engine.jobs: SIGTERM: this job ends without a result (requeued, cancelled, pre-empted or out of time: "
          "Slurm's state says which)", file=sys.stderr, flush=True)
    raise SystemExit(128 + signal.SIGTERM)


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (None: no such process): a pid and its start identify one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: only whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _parent_mark(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_process_start(pid) or ''}"


def _watch_parent(mark: str, period_s: float = 0.5) -> threading.Thread:
    """Send this process a SIGTERM (:func:`_terminated`) once the process ``mark`` (PID:START) has ended: a local
    job does not outlive its ensemble process, even one killed with SIGKILL (its steps would go on unattended and
    hold the fold's folder). A daemon thread polls it every ``period_s`` seconds."""
    pid, _, start = mark.partition(":")

    def watch():
        while _process_start(int(pid)) == start:
            time.sleep(period_s)
        print(f"engine.jobs: the ensemble process {pid} has ended: stopping this job", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


# -- submitting ------------------------------------------------------------------------------------------------------
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
    whatever directory it runs in. A local job's controller starts with SIGINT handled (:func:`_interruptible`),
    its stderr in the job folder (:func:`_stderr_to`) and this process's mark (the job ends with it). sbatch's
    refusal is kept in the error only (submitit would print it as well)."""
    path = os.pathsep.join([str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])
    with submitit.helpers.environment_variables(PYTHONPATH=path):
        if not isinstance(executor, submitit.LocalExecutor):
            with contextlib.redirect_stderr(io.StringIO()):
                return executor.submit(fn)
        with (submitit.helpers.environment_variables(**{PARENT_ENV: _parent_mark()}), _interruptible(),
              _stderr_to(Path(executor.folder) / "controller.err")):
            return executor.submit(fn)


# -- what Slurm says of a job (scontrol; sacct only for a job scontrol has forgotten) ----------------------------------
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "COMPLETING", "CONFIGURING", "SUSPENDED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class SlurmState:
    """A Slurm job's state (``scontrol show job``); ``state`` empty: Slurm no longer knows the job (it ended more
    than MinJobAge ago) and there is no accounting to ask."""

    job_id: str
    state: str = ""
    reason: str = ""
    exit_code: str = ""  # CODE:SIGNAL
    requeue: bool = False  # a pre-empted job is requeued rather than ended

    @property
    def ended(self) -> bool:
        if self.state == "PREEMPTED":
            return not self.requeue
        return self.state not in ACTIVE

    def describe(self) -> str:
        if not self.state:
            return f"Slurm job {self.job_id}: ended, no longer known to Slurm"
        code, _, sig = self.exit_code.partition(":")
        codes = [f"exit {code}"] if code not in ("", "0") else []
        codes += [f"signal {sig}"] if sig not in ("", "0") else []
        reason = f", {self.reason}" if self.reason not in ("", "None") else ""
        return f"Slurm job {self.job_id}: {self.state}" + (f" ({', '.join(codes)})" if codes else "") + reason


_FIELDS = re.compile(r"(?:^|\s)(JobState|Reason|ExitCode|Requeue)=(\S*)")


def slurm_state(job_id: str) -> SlurmState | None:
    """What Slurm says of job ``job_id`` now; None when Slurm cannot be asked (keep waiting). No accounting needed:
    scontrol answers for a job until MinJobAge after its end, sacct (when there is accounting) after that."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], check=False, capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0 and "JobState=" in out.stdout:
        f = dict(_FIELDS.findall(out.stdout.splitlines()[0]))
        return SlurmState(str(job_id), f.get("JobState", ""), f.get("Reason", ""), f.get("ExitCode", ""),
                          f.get("Requeue") == "1")
    if "Invalid job id" not in out.stderr:
        return None
    return _accounted_state(str(job_id)) or SlurmState(str(job_id))


def _accounted_state(job_id: str) -> SlurmState | None:
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job_id], check=False,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""
    if "|" not in line:
        return None
    state, code = line.split("|")[:2]
    return SlurmState(job_id, state.split()[0] if state.split() else "", state, code)


class JobEnded(Exception):
    """A Slurm job that ended without a result (killed, cancelled, out of time, lost with its node)."""

    def __init__(self, state: SlurmState):
        super().__init__(state.describe())
        self.state = state


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
    cancelled: bool = False  # cancelled in Slurm by someone else: this fold stops, the others go on


_STEP_ERROR = re.compile(r"^engine\.jobs\.(StepFailed|StepRefused): (.+)$", re.MULTILINE)


def failure(error: BaseException, task: Task, job) -> Failure:
    """What went wrong with a job, in one line: the failed step's own message when a step failed (from the job's
    traceback, which is all submitit keeps of an exception raised in another process), what Slurm says of a job
    that ended without a result, else what submitit says (with Slurm's state of a Slurm job)."""
    if isinstance(error, StepFailed):  # the debug executor: the exception itself
        return Failure(str(error), not isinstance(error, StepRefused))
    found = _STEP_ERROR.findall(str(error))
    if found:
        kind, message = found[-1]
        return Failure(message, kind == "StepFailed")
    paths = getattr(job, "paths", None)
    where = f"; job output in {paths.stdout} and {paths.stderr}" if paths is not None else ""
    if isinstance(error, JobEnded):
        said = error.state.describe()
        if error.state.state.startswith("CANCELLED"):
            return Failure(f"{task.label} was cancelled in Slurm ({said}): this fold stops, the others go on; its "
                           f"log: {task.log}", False, cancelled=True)
        if error.state.state == "TIMEOUT":
            return Failure(f"the job of {task.label} reached its time limit before it could be requeued ({said}); "
                           f"its log: {task.log}{where}", True)
        return Failure(f"the job of {task.label} ended without a result ({said}); its log: {task.log}{where}", True)
    state = slurm_state(job.job_id) if isinstance(job, submitit.SlurmJob) else None
    said = f"; {state.describe()}" if state is not None else ""
    return Failure(f"the job of {task.label} ended without finishing ({excerpt(_summary(error), 200)}{said}); its "
                   f"log: {task.log}{where}", True)


def _summary(error: BaseException) -> str:
    """One line of what submitit says: the last line of the job's traceback (the exception) when it has one."""
    lines = [s.strip() for s in str(error).splitlines() if s.strip()]
    rules = [i for i, s in enumerate(lines) if set(s) == {"-"}]
    if len(rules) >= 2 and rules[-1] > rules[0] + 1:  # FailedJobError: the trace between two rules
        return lines[rules[-1] - 1]
    return lines[0] if lines else type(error).__name__


def outcome(job) -> tuple[bool, BaseException | None]:
    """(finished, its error or None). A debug job runs now, in this process (its exception is returned: asking
    for its result would open a debugger). A Slurm job has finished when Slurm says it has ended (never while it is
    requeued or pending); with no result it is a :class:`JobEnded` (no accounting needed, no sacct polled)."""
    if isinstance(job, DebugJob):
        return True, job.exception()
    if isinstance(job, submitit.SlurmJob):
        state = slurm_state(job.job_id)
        if state is None or not state.ended:
            return False, None
        if not job.paths.result_pickle.exists():
            return True, JobEnded(state)
        return True, job.exception()
    if not job.done():
        return False, None
    return True, job.exception()


def _alive(job) -> bool:
    """A job that may still run: a local job's process, or a Slurm job Slurm has not ended (queued included)."""
    if isinstance(job, submitit.SlurmJob):
        state = slurm_state(job.job_id)
        return state is None or not state.ended
    return isinstance(job, LocalJob) and not job.done()


def _requeues(job, granted: int) -> int:
    """How many time-outs submitit requeued ``job`` after (of the ``granted``): the countdown it keeps in the job's
    pickle."""
    try:
        left = DelayedSubmission.load(job.paths.submitted_pickle)._timeout_countdown
    except Exception:  # noqa: BLE001  (a debug job, a pickle gone: none)
        return 0
    return max(0, granted - max(left, 0))


def _one_owner(task: Task, monitor, wait_s: float = 120.0) -> None:
    """Before a fold's job is submitted: any earlier Slurm job of the fold (a run stopped by SIGKILL, a requeued
    copy) that is still queued or running is cancelled and waited for, so that one job at a time writes the fold's
    folder (also where the filesystem has no locks)."""
    if not isinstance(task.executor, submitit.SlurmExecutor):
        return
    earlier = [p.name.split("_")[0] for p in Path(task.executor.folder).glob("*_submitted.pkl")]
    live = [j for j in earlier if (s := slurm_state(j)) is not None and not s.ended]
    for job_id in live:
        monitor.say(f"[{task.label}] Slurm job {job_id} of an earlier run still holds this fold: cancelling it")
        subprocess.run(["scancel", job_id], check=False, capture_output=True)
    deadline = time.monotonic() + wait_s
    while live and time.monotonic() < deadline:
        time.sleep(1.0)
        live = [j for j in live if (s := slurm_state(j)) is None or not s.ended]
    if live:
        raise UserError(f"{task.label}: Slurm job {live[0]} of an earlier run did not end after scancel within "
                        f"{wait_s:.0f} s; wait for it (squeue -j {live[0]}) and run again")


@dataclass
class Running:
    task: Task
    place: Place
    job: object
    left: int  # retries left to the fold when this job was submitted (its time-outs spend them too)


def schedule(tasks: list[Task], places: list[Place], monitor, max_retries: int, poll_s: float = 1.0,
             stop_s: float = 60.0) -> None:
    """Run every task as a job, at most one per place at a time, in the order given.

    A fold's job is started at most ``max_retries`` + 1 times in all: a failed job is submitted again (same place)
    unless its step refused its input, and each time-out after which submitit requeued a job spends one retry as
    well. A fold cancelled in Slurm by someone else stops (a line says so) while the others go on; the run then
    ends with an error naming it. A fold that fails for good, or an interruption of this process, cancels every
    running job and waits for them (at most ``stop_s`` seconds) before the error goes on. ``monitor``
    (engine.watch.Monitor) is told what starts and ends."""
    todo, free, running, cancelled = deque(tasks), deque(places), [], []

    def start(task: Task, place: Place, left: int) -> Running:
        monitor.start(task.label, first=left == max_retries)
        _one_owner(task, monitor)
        if isinstance(task.executor, PicklingExecutor):
            task.executor.max_num_timeout = left  # submitit's requeues after a time-out: what is left
        try:
            job = submit(task.executor, task.build(place))
        except (FailedJobError, FailedSubmissionError) as exc:  # e.g. sbatch refused the job's options
            raise UserError(f"{task.label}: its job could not be submitted ({excerpt(_summary(exc), 200)})"
                            f"{_submission_hint(exc)}") from None
        return Running(task, place, job, left)

    try:
        while todo or running:
            while todo and free:
                running.append(start(todo.popleft(), free.popleft(), max_retries))
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
                left = r.left - _requeues(r.job, r.left) - 1
                if why.cancelled:
                    running.remove(r)
                    free.append(r.place)
                    monitor.end(r.task.label, ok=False)
                    monitor.say(f"[{r.task.label}] {why.message}")
                    cancelled.append(r.task.label)
                    continue
                if why.retry and left >= 0:
                    monitor.end(r.task.label, ok=False)
                    monitor.say(f"[{r.task.label}] {why.message}; trying again from its last checkpoint "
                                f"(attempt {max_retries - left + 1} of {max_retries + 1})")
                    running[running.index(r)] = start(r.task, r.place, left)
                    continue
                running.remove(r)
                monitor.end(r.task.label, ok=False)
                tries = f" ({max_retries - left} attempts)" if max_retries - left > 1 else ""
                raise (StepFailed if why.retry else StepRefused)(why.message + tries)
            monitor.update()
            if running and not any(isinstance(r.job, DebugJob) for r in running):
                time.sleep(poll_s)
    except BaseException:
        cancel(running, monitor, stop_s)
        raise
    if cancelled:
        raise UserError(f"cancelled in Slurm: {few(cancelled)}; the other folds finished; run ensemble.py again to "
                        f"resume {'it' if len(cancelled) == 1 else 'them'} from the last checkpoint")


def _submission_hint(exc: BaseException) -> str:
    """What to try when sbatch refused a job."""
    text = str(exc).lower()
    if "gres" in text or "gpu" in text:
        return ("; this partition may have no such GPUs: --slurm-gpus-per-fold 0 for folds on the CPU (--device "
                "cpu), or another --slurm-partition")
    if "partition" in text:
        return "; sinfo lists the partitions"
    return "; check the --slurm-* options (sbatch --test-only shows what the cluster accepts)"


def cancel(running: list[Running], monitor, stop_s: float = 60.0) -> None:
    """Cancel every running job and wait until they have ended (local processes; Slurm jobs, queued or running)."""
    for r in running:
        monitor.say(f"stopping {r.task.label} (it resumes from its last checkpoint next time)")
        r.job.cancel(check=False)
    deadline = time.monotonic() + stop_s  # a bound on a hung job only
    while any(_alive(r.job) for r in running) and time.monotonic() < deadline:
        time.sleep(0.5 if any(isinstance(r.job, submitit.SlurmJob) for r in running) else 0.1)
    monitor.update()
    for r in running:
        if _alive(r.job):
            monitor.say(f"{r.task.label} is still running after {stop_s:.0f} s: its job is {r.job.job_id}, its "
                        f"files are in {r.task.executor.folder}")
