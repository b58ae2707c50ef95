"""engine.jobs without a cluster: a local fold job ends with its ensemble process, even one killed with SIGKILL
(real processes: the ensemble stand-in, submitit's controller, the job, its step); what Slurm says of a job, in
words."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import jobs

ROOT = Path(__file__).resolve().parents[1]

STEP = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"


def _hold(folder: str) -> None:
    """A job function: one step (a real subprocess) that writes its pid and sleeps."""
    jobs.run_step(jobs.Step("train", folder, ("-c", STEP, str(Path(folder) / "step.pid"))), "fold0",
                  Path(folder) / "fold0.log", None, False)


PARENT = """
import functools, sys, time
import cloudpickle
import tests.test_jobs as t
from engine import jobs
cloudpickle.register_pickle_by_value(t)
folder = sys.argv[1]
job = jobs.submit(jobs.make_executor("local", folder + "/jobs", 0), functools.partial(t._hold, folder))
open(folder + "/job.id", "w").write(str(job.job_id))
time.sleep(300)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_local_job_ends_with_its_ensemble_process_killed_by_sigkill(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    step_pid = tmp_path / "step.pid"
    pids = []
    try:
        deadline = time.monotonic() + 120  # a bound on a hung test only
        while not (step_pid.is_file() and step_pid.read_text()):
            assert parent.poll() is None and time.monotonic() < deadline, "the job's step never started"
            time.sleep(0.1)
        step = int(step_pid.read_text())
        job = int(Path(f"/proc/{step}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the step's parent
        pids = [job, step]
        assert job != parent.pid
        parent.kill()  # SIGKILL: nothing of ensemble.py's runs on the way out
        parent.wait()
        deadline = time.monotonic() + 30
        while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in pids if not _gone(p)] == [], "the job outlived its ensemble process"
    finally:
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()


def test_what_slurm_says_in_words():
    assert jobs.SlurmState("7", "FAILED", "NonZeroExitCode", "137:0").describe() == (
        "Slurm job 7: FAILED (exit 137), NonZeroExitCode")
    assert jobs.SlurmState("8", "CANCELLED", "None", "0:15").describe() == "Slurm job 8: CANCELLED (signal 15)"
    assert jobs.SlurmState("9").describe() == "Slurm job 9: ended, no longer known to Slurm"
    assert not jobs.SlurmState("3", "PENDING", "BeginTime").ended and jobs.SlurmState("3", "TIMEOUT").ended
    assert not jobs.SlurmState("4", "PREEMPTED", requeue=True).ended and jobs.SlurmState("4", "PREEMPTED").ended


def test_sbatch_options_that_would_break_the_jobs_are_refused():
    """--slurm-extra chdir=DIR (the jobs would not find the run's relative paths, their logs would go elsewhere)
    and no-requeue (a pre-empted fold would not come back) are ensemble.py's to set."""
    import argparse

    from cli.ensemble import sbatch_option

    assert sbatch_option("account=proj") == ("account", "proj")
    for text in ("chdir=/tmp", "D=/tmp", "no-requeue"):
        with pytest.raises(argparse.ArgumentTypeError, match="is set by ensemble.py"):
            sbatch_option(text)
