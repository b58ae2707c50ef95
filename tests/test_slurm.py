"""ensemble.py --executor slurm on a real one-node Slurm cluster (scripts/slurm-cluster.sh start; CI starts it).

What only a real cluster shows: a job that Slurm requeues (``scontrol requeue``, a pre-emption with or without the
job's own signal) stays the fold's one job and resumes, its SWA model written once; a fold cancelled with scancel
stops alone and the run says so; a job killed without a result is seen within a bounded time with accounting and
without it, Slurm's state in the message; time limits and failures spend one budget (--max-retries); a step that
refuses its input is not retried; SIGTERM to ensemble.py cancels every job; sbatch's refusal is one line with a
hint. Tiny: the folds' steps are a stand-in (a real subprocess that leaves a checkpoint and waits, shipped by value
with cloudpickle), except in the end-to-end test, which runs the real train.py and swa.py for one epoch.

Requeued jobs are held ~120 s by Slurm (BeginTime): :func:`released` starts them at once. Skipped, with the reason,
where no cluster answers (SLURM_CONF, or /tmp/tgs-slurm/slurm.conf).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from engine import jobs
from tests.tiny import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-cluster.sh"
CONF = os.environ.get("SLURM_CONF") or "/tmp/tgs-slurm/slurm.conf"
BOUND_S = 300  # only a bound on a hung test: nothing is timed


def _cluster_problem() -> str | None:
    if not Path(CONF).is_file():
        return f"no Slurm cluster: {CONF} missing (scripts/slurm-cluster.sh start, as root)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], check=False, env={**os.environ, "SLURM_CONF": CONF},
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Slurm cluster: sinfo: {exc}"
    if out.returncode != 0:
        return f"no Slurm cluster: sinfo: {out.stderr.strip()[:200]}"
    return None


PROBLEM = _cluster_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))]


# -- the stand-in of a fold's steps (runs in the job process) --------------------------------------------------------
FAKE_TRAIN = """
import json, os, pathlib, sys, time
spec = json.loads(sys.argv[1])
ck = pathlib.Path(spec["checkpoint"])
ck.parent.mkdir(parents=True, exist_ok=True)
ck.write_text(str(os.getpid()))
pathlib.Path(spec["started"]).write_text(str(os.getpid()))
deadline = time.monotonic() + spec["wait_s"]
while time.monotonic() < deadline:
    time.sleep(0.1)
print("error: refused by the stand-in" if spec["exit"] == 2 else "trained")
sys.exit(spec["exit"])
"""


def _stand_in(step, label, log, env=None, echo=True):
    """A fold's step: train is a real subprocess (through jobs.run_step, as train.py) that writes the fold's last
    checkpoint, marks RUN/started/TAG-ATTEMPT and, as RUN/plan.json says for the fold, waits (first attempt:
    ``wait``; every attempt: ``always``) or exits 2 (``refuse``); swa writes the SWA model. Every call is a line of
    RUN/record.jsonl (its Slurm job, process, arguments)."""
    from engine import fold_job
    from engine.layout import EnsembleLayout

    spec_of_job = fold_job.FoldSpec.read(step.folder)
    run = Path(log).parent.parent
    plan = json.loads((run / "plan.json").read_text()).get(label, "") if (run / "plan.json").is_file() else ""
    record = run / "record.jsonl"
    attempt = 1 + sum(1 for line in (record.read_text().splitlines() if record.is_file() else [])
                      if json.loads(line)["label"] == label and json.loads(line)["script"] == step.name)
    with open(record, "a") as fh:
        fh.write(json.dumps({"label": label, "script": step.name, "attempt": attempt, "pid": os.getpid(),
                             "job": os.environ.get("SLURM_JOB_ID"),
                             "resume": Path(spec_of_job.last).is_file()}) + "\n")
    if step.name == "train":
        tag, (mode, fold) = label.replace("/", "-"), label.split("/")
        (run / "started").mkdir(exist_ok=True)
        wait = plan == "always" or (plan == "wait" and attempt == 1)
        spec = {"checkpoint": str(EnsembleLayout(run).fold_run(mode, fold).checkpoint("last")),
                "started": str(run / "started" / f"{tag}-{attempt}"), "wait_s": 240 if wait else 0,
                "exit": 2 if plan == "refuse" else 0}
        jobs.run_step(replace(step, launcher=("-c", FAKE_TRAIN, json.dumps(spec))), label, log, env, False)
    elif step.name == "swa":
        out = Path(spec_of_job.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(str(os.getpid()))


def _main():
    """ensemble.py with the stand-in steps: ``python -c 'from tests.test_slurm import _main; _main()' ARGV``."""
    import cloudpickle

    from cli import ensemble as ensemble_cli

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from engine.ensemble import options, steps, training

    training.RUNNER = _stand_in
    steps.run_here = lambda step, label, log, dry=False: None  # the ensemble's own steps: not what is tested here
    options.POLL_S["slurm"] = 1.0
    sys.exit(ensemble_cli.main(["--default-post", *sys.argv[1:]]))  # no search ran: the defaults


# -- the harness -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF for this module; the cluster as started (accounting on, the user signal on pre-emption) after."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", CONF)
        yield
        _configure("accounting=on", "user-signal=on")


def _configure(*settings):
    subprocess.run(["bash", str(SCRIPT), "configure", *settings], check=True, timeout=180,
                   env={**os.environ, "SLURM_CLUSTER_DIR": str(Path(CONF).parent)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("slurmdata")
    write_dataset(root, n_train=40, n_test=8, seed=5)
    return root


@pytest.fixture
def released(cluster):
    """Requeued jobs start as soon as their previous run has ended (no step left, held 3 s) instead of after
    Slurm's ~120 s hold (BeginTime); one started while its last run still ends is killed (credential revoked)."""
    done, held = threading.Event(), {}

    def release():
        while not done.wait(0.5):
            out = subprocess.run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], check=False, capture_output=True,
                                 text=True)
            for line in out.stdout.splitlines():
                job, _, reason = line.partition(" ")
                if reason != "BeginTime":
                    continue
                since = held.setdefault(job, time.monotonic())
                steps = subprocess.run(["squeue", "-h", "-s", "-j", job], check=False, capture_output=True,
                                       text=True).stdout.strip()
                if not steps and time.monotonic() - since >= 3:
                    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], check=False,
                                   capture_output=True)
                    held.pop(job)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    yield
    done.set()
    thread.join()


STARTED: list = []  # the ensemble processes of the running test


@pytest.fixture(autouse=True)
def _no_ensemble_left():
    """An ensemble.py a failed test left running is stopped (SIGTERM: its jobs are cancelled), then killed."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Ensemble:
    """ensemble.py (stand-in steps unless ``real``) as a process, its output in files."""

    def __init__(self, run: Path, argv: list, real: bool = False, cwd: Path | None = None):
        self.run = run
        run.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = run.parent / f"{run.name}.out", run.parent / f"{run.name}.err"
        cmd = ([sys.executable, str(ROOT / "ensemble.py")] if real else
               [sys.executable, "-c", "from tests.test_slurm import _main; _main()"])
        env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([*cmd, *argv], stdout=out, stderr=err, cwd=cwd or ROOT, env=env)
        STARTED.append(self.proc)

    def wait(self, timeout: float = BOUND_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)  # its jobs are cancelled on the way out
            self.proc.wait(timeout=120)
            raise AssertionError(f"ensemble.py still running after {timeout:.0f} s:\n{self.out[-3000:]}") from None

    def started(self, tag: str, attempt: int = 1) -> dict:
        """The record of ``tag``'s train step ``attempt``, once its stand-in has started."""
        mark = self.run / "started" / f"{tag}-{attempt}"
        deadline = time.monotonic() + BOUND_S
        while not mark.exists():
            assert self.proc.poll() is None, f"ensemble.py ended early:\n{self.out[-3000:]}\n{self.err}"
            assert time.monotonic() < deadline, f"{tag} attempt {attempt} never started:\n{self.out[-3000:]}"
            time.sleep(0.2)
        label = tag.replace("-", "/", 1)
        return next(r for r in self.records() if r["label"] == label and r["script"] == "train"
                    and r["attempt"] == attempt)

    def step_pid(self, tag: str, attempt: int = 1) -> int:
        """The process of ``tag``'s train step ``attempt`` (the stand-in's subprocess, as train.py would be)."""
        return int((self.run / "started" / f"{tag}-{attempt}").read_text())

    def records(self, label: str | None = None, script: str | None = None) -> list[dict]:
        path = self.run / "record.jsonl"
        rows = [json.loads(s) for s in path.read_text().splitlines()] if path.is_file() else []
        return [r for r in rows if (label is None or r["label"] == label) and (script is None or r["script"] == script)]

    def jobs(self, tag: str) -> list[str]:
        """The Slurm jobs submitted for a fold (submitit's pickle per job)."""
        return sorted(p.name.split("_")[0] for p in (self.run / "jobs" / tag).glob("*_submitted.pkl"))

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()


def _plan(run: Path, **plans) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "plan.json").write_text(json.dumps({k.replace("_", "/"): v for k, v in plans.items()}))


def _argv(data, run, folds="fold0,fold1", *extra, epochs=1, gpus="0"):
    """ensemble.py's arguments; the GPUs per fold said (0: the cluster has none) unless ``gpus`` is None."""
    gpus = ["--slurm-gpus-per-fold", gpus] if gpus is not None else []
    return ["--data-dir", str(data), "--run-dir", str(run), "--folds", folds, "--modes", "resize", "--resize-size",
            "32", "--executor", "slurm", *gpus, *extra, "--", *TINY_MODEL, "--max-epochs", str(epochs)]


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _state(job: str) -> str:
    """Slurm's state of a job (scontrol; sacct once scontrol has forgotten it)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], check=False, capture_output=True, text=True).stdout
    if "JobState=" in out:
        return out.split("JobState=")[1].split()[0]
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job], check=False, capture_output=True,
                         text=True)
    return out.stdout.split()[0] if out.stdout.split() else "gone"


class Checks:
    """Every check of a run is made and the failed ones are listed together (one run shows each defect)."""

    def __init__(self, ens: Ensemble):
        self.ens, self.failed = ens, []

    def __call__(self, ok: bool, what: str) -> None:
        if not ok:
            self.failed.append(what)

    def one_copy(self, label: str, starts: int = 2) -> None:
        """The fold ran as one Slurm job, started ``starts`` times (the later ones resuming), its SWA model once."""
        tag, trains = label.replace("/", "-"), self.ens.records(label, "train")
        self(len(self.ens.jobs(tag)) == 1, f"{label}: one Slurm job, not {self.ens.jobs(tag)}")
        self(len(trains) == starts and {r["job"] for r in trains} == set(self.ens.jobs(tag)),
             f"{label}: {starts} starts of its job, not {[(r['job'], r['pid']) for r in trains]}")
        self([r["resume"] for r in trains] == [False] + [True] * (len(trains) - 1), f"{label}: resumed")
        self(len(self.ens.records(label, "swa")) == 1, f"{label}: SWA written {len(self.ens.records(label, 'swa'))}x")

    def done(self) -> None:
        assert not self.failed, "\n".join(self.failed) + "\n--- ensemble.py said:\n" + self.ens.out[-4000:] + \
            self.ens.err


# -- the tests -------------------------------------------------------------------------------------------------------
def test_two_folds_end_to_end_with_the_real_scripts(cluster, data, tmp_path):
    """The real train.py and swa.py in two sbatch jobs (one epoch), then the submission, checked by score.py. The
    run folder is relative: the jobs run in ensemble.py's directory (sbatch --chdir) with absolute job files; CPU
    folds ask for no GPU; the settings line says "1 CPU"."""
    argv = _argv(data, "rel/run", "fold0,fold1", "--slurm-cpus-per-fold", "1", "--slurm-time", "30", gpus=None)
    ens = Ensemble(tmp_path / "rel" / "run", argv, real=True, cwd=tmp_path)
    check, run = Checks(ens), tmp_path / "rel" / "run"
    check(ens.wait() == 0, "ensemble.py exits 0")
    sub = run / "ensemble-submission.csv"
    check(sub.is_file() and len(pd.read_csv(sub)) == 8, "a submission of the 8 test images")
    check("default partition, 0 GPUs per fold, 1 CPU, time 30 min" in ens.out, "CPU folds ask for 0 GPUs; 1 CPU")
    for fold in ("fold0", "fold1"):
        check((run / "resize" / f"{fold}_swa.pth").is_file(), f"{fold}: its SWA model")
        scripts = list((run / "jobs" / f"resize-{fold}").glob("*_submission.sh"))
        script = scripts[0].read_text() if scripts else ""
        check(f"#SBATCH --chdir={tmp_path}" in script, f"{fold}: the job runs in ensemble.py's directory")
        check(f"#SBATCH --output={run}/jobs/" in script, f"{fold}: absolute job files")
        check(bool(script) and "gpus" not in script, f"{fold}: no GPU asked")
    check("sacct" not in ens.out + ens.err and ens.err == "", "no warnings")
    check.done()


def test_requeue_and_scancel_and_sigkill_in_one_run(cluster, data, tmp_path, released):
    """Three folds at once, with accounting: fold0 is requeued mid-fold (scontrol requeue): it resumes in the same
    job, no copy, its SWA model written once; fold1 is cancelled by a user (scancel): it stops with a line, the
    others go on, the run ends naming it; fold2's job is killed (SIGKILL) without a result: retried, with Slurm's
    state in the line."""
    run = tmp_path / "three"
    _plan(run, resize_fold0="wait", resize_fold1="wait", resize_fold2="wait")
    ens = Ensemble(run, _argv(data, run, "fold0,fold1,fold2", "--max-retries", "1"))
    requeued, cancelled, killed = (ens.started(f"resize-fold{k}")["job"] for k in range(3))
    subprocess.run(["scontrol", "requeue", requeued], check=True)
    subprocess.run(["scancel", cancelled], check=True)
    os.kill(ens.started("resize-fold2")["pid"], signal.SIGKILL)
    ens.started("resize-fold2", 2)
    check = Checks(ens)
    check(_gone(ens.step_pid("resize-fold2")), "the killed job's step ended before its retry started")
    check(ens.wait() == 2, "ensemble.py exits 2 (a fold was cancelled)")
    check.one_copy("resize/fold0")
    check(ens.err == ("error: cancelled in Slurm: resize/fold1; the other folds finished; run ensemble.py again to "
                      "resume it from the last checkpoint\n"), "the run ends naming the cancelled fold")
    said = [line for line in ens.out.splitlines() if line.startswith("[resize/fold1] resize/fold1 was cancelled")]
    check(len(said) == 1 and f"was cancelled in Slurm (Slurm job {cancelled}: CANCELLED" in said[0]
          and said[0].endswith(f"this fold stops, the others go on; its log: {run / 'logs' / 'resize-fold1.log'}"),
          "a line says fold1 was cancelled")
    check(len(ens.records("resize/fold1", "train")) == 1 and not ens.records("resize/fold1", "swa"),
          "fold1 is not started again")
    check(f"[resize/fold2] the job of resize/fold2 ended without a result (Slurm job {killed}: FAILED (exit 137), "
          "NonZeroExitCode)" in ens.out and "(attempt 2 of 2)" in ens.out, "Slurm's state in fold2's line")
    check(len(ens.jobs("resize-fold2")) == 2 and len(ens.records("resize/fold2", "swa")) == 1, "fold2 retried")
    again = [line for line in ens.out.splitlines() if "trying again" in line]
    check(len(again) == 1 and again[0].startswith("[resize/fold2]"), "only fold2 was submitted again")
    check(all(_state(j) != "RUNNING" for k in range(3) for j in ens.jobs(f"resize-fold{k}")), "no job left")
    check.done()


def test_without_accounting_a_killed_job_is_seen_and_preemption_requeues(cluster, data, tmp_path, released):
    """No accounting (sacct refuses) and Slurm's default pre-emption (SIGTERM, no user signal): fold0's job killed
    without a result is seen and retried (no hang, no sacct warnings); fold1, pre-empted by a high-priority job,
    is requeued by Slurm and resumes, one job, its SWA model written once."""
    _configure("accounting=off", "user-signal=off")
    assert subprocess.run(["sacct", "-j", "1"], check=False, capture_output=True).returncode != 0
    run = tmp_path / "noacct"
    _plan(run, resize_fold0="wait", resize_fold1="wait")
    ens = Ensemble(run, _argv(data, run, "fold0,fold1", "--max-retries", "1"))
    killed = ens.started("resize-fold0")["job"]
    ens.started("resize-fold1")
    os.kill(ens.started("resize-fold0")["pid"], signal.SIGKILL)
    ens.started("resize-fold0", 2)
    step_gone = _gone(ens.step_pid("resize-fold0"))
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "--exclusive", "-o", "/dev/null", "--wrap",
                           "sleep 1"], check=True, capture_output=True, text=True).stdout.strip()
    check = Checks(ens)
    check(step_gone, "the killed job's step ended before its retry started")
    check(ens.wait() == 0, "ensemble.py exits 0")
    check(f"ended without a result (Slurm job {killed}: FAILED (exit 137), NonZeroExitCode)" in ens.out,
          "Slurm's state in fold0's line")
    check("Bypassing" not in ens.out + ens.err and "sacct" not in ens.out + ens.err, "no sacct warnings")
    check.one_copy("resize/fold1")
    check(_state(high) == "COMPLETED", "the high-priority job ran")
    check.done()


def test_preemption_with_the_user_signal_checkpoints_and_requeues(cluster, data, tmp_path, released):
    """Pre-emption with preempt_send_user_signal: submitit's USR2 handler checkpoints and requeues the job itself;
    one job, resumed, its SWA model written once."""
    _configure("accounting=on", "user-signal=on")
    run = tmp_path / "usr2"
    _plan(run, resize_fold0="wait")
    ens = Ensemble(run, _argv(data, run, "fold0"))
    job = ens.started("resize-fold0")["job"]
    subprocess.run(["sbatch", "-p", "high", "--exclusive", "-o", "/dev/null", "--wrap", "sleep 1"], check=True,
                   capture_output=True)
    check = Checks(ens)
    check(ens.wait() == 0, "ensemble.py exits 0")
    check.one_copy("resize/fold0")
    check.done()
    log = "".join(p.read_text() for p in (run / "jobs" / "resize-fold0").glob(f"{job}_0_log.*"))
    assert "Caught signal SIGUSR2" in log  # submitit's handler checkpointed the job and asked Slurm to requeue it


def test_time_limits_spend_the_retries(cluster, data, tmp_path, released):
    """A fold that never finishes within --slurm-time 1: submitit requeues it after its time limit signal, and
    --max-retries 1 bounds the starts to 2 in all (not (1 + 1)^2): then it stops with one line."""
    run = tmp_path / "limit"
    _plan(run, resize_fold0="always")
    ens = Ensemble(run, _argv(data, run, "fold0", "--slurm-time", "1", "--max-retries", "1"))
    assert ens.wait() == 2
    assert len(ens.records("resize/fold0", "train")) == 2 and len(ens.jobs("resize-fold0")) == 1
    assert "timed-out too many times" in ens.err and ens.err.count("\n") == 1


def test_a_refused_step_is_not_retried_and_sigterm_cancels_every_job(cluster, data, tmp_path):
    """fold0's step exits 2 (its input is refused): no retry, one line; the other fold's job is cancelled. Then a
    SIGTERM to ensemble.py cancels every queued and running job before it exits."""
    run = tmp_path / "refused"
    _plan(run, resize_fold0="refuse", resize_fold1="always")
    ens = Ensemble(run, _argv(data, run, "fold0,fold1", "--max-retries", "2"))
    assert ens.wait() == 2
    assert ens.err.startswith("error: the train step failed for resize/fold0 (exit 2): refused by the stand-in")
    assert ens.err.count("\n") == 1 and len(ens.jobs("resize-fold0")) == 1
    assert all(_state(j) in ("CANCELLED", "COMPLETED") for j in ens.jobs("resize-fold1"))

    run = tmp_path / "term"
    _plan(run, resize_fold0="always", resize_fold1="always", resize_fold2="always")
    ens = Ensemble(run, _argv(data, run, "fold0,fold1,fold2", "--slurm-cpus-per-fold", "4"))  # fold2 queued
    ens.started("resize-fold0"), ens.started("resize-fold1")
    ens.proc.send_signal(signal.SIGTERM)
    assert ens.wait() == 130 and ens.err == "interrupted\n"
    for tag in ("resize-fold0", "resize-fold1", "resize-fold2"):
        assert f"stopping {tag.replace('-', '/')}" in ens.out
        assert [_state(j) for j in ens.jobs(tag)] == ["CANCELLED"]


def test_sbatch_refusal_is_one_line_with_a_hint(cluster, data, tmp_path):
    """A GPU asked of a cluster without GPUs: sbatch's refusal once, with what to do."""
    run = tmp_path / "gpu"
    ens = Ensemble(run, _argv(data, run, "fold0", gpus="1"))
    assert ens.wait() == 2
    assert ens.err.count("\n") == 1 and "resize/fold0: its job could not be submitted (" in ens.err
    assert "--slurm-gpus-per-fold 0 for folds on the CPU" in ens.err


def test_a_rerun_after_sigkill_cancels_the_earlier_job_first(cluster, data, tmp_path):
    """ensemble.py killed with SIGKILL leaves its Slurm job running; the next run cancels it (and waits for it)
    before it submits the fold again: one job at a time writes the fold, without relying on file locks."""
    run = tmp_path / "again"
    _plan(run, resize_fold0="always")
    first = Ensemble(run, _argv(data, run, "fold0"))
    earlier = first.started("resize-fold0")["job"]
    first.proc.kill()
    first.proc.wait()
    assert _state(earlier) == "RUNNING"
    _plan(run, resize_fold0="")
    (run / "record.jsonl").unlink()
    for path in (run / "resize" / "fold0" / "checkpoints").iterdir():  # the stand-in's is no torch file
        path.unlink()
    second = Ensemble(run, _argv(data, run, "fold0"))
    check = Checks(second)
    try:
        check(second.wait() == 0, "the rerun exits 0")
    finally:
        subprocess.run(["scancel", earlier], check=False)
    check(f"[resize/fold0] Slurm job {earlier} of an earlier run still holds this fold: cancelling it" in second.out,
          "a line says the earlier job is cancelled")
    check(_state(earlier) == "CANCELLED", "the earlier job was cancelled")
    check(_gone(first.step_pid("resize-fold0")), "the earlier job's step has ended")
    trains = second.records("resize/fold0", "train")
    check(len(trains) == 1 and trains[0]["job"] != earlier, "one new job")
    check.done()
