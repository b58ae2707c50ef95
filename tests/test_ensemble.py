"""ensemble.py: one command from training to the ensemble submission; finished folds are skipped, interrupted ones
resume, folds made from other data or options are refused (or retrained with --overwrite); a failing step stops
everything with one line; pass-through options are checked before anything runs. Folds are submitit jobs: the
local executor's real processes (one per GPU, or sharing the cores; retried after a failure; requeued after a
pre-emption; all stopped by a failure or a SIGTERM), Slurm's sbatch script (fake srun/sbatch, nothing submitted),
and the progress shown while they run (hand-built metrics files).

To keep the tests fast, the scripts often run in-process (ensemble.RUNNER replaced, --executor debug), or a
recording stand-in of the steps is shipped by value to the job processes (cloudpickle); some tests run the real
train.py and swa.py in real jobs.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import importlib

import models
from cli import ensemble as ensemble_cli
from engine import ensemble, jobs, watch
from datasets import folds, kaggle
from tgs import postprocess, pseudo
from tgs import probabilities as P
from tests.tiny import TINY_MODEL as TINY



@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("ensdata")
    write_dataset(root, n_train=40, n_test=8, seed=5)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def calls(monkeypatch):
    """Run the scripts in-process; record (script, argv, label, env)."""
    record = []

    def inprocess(step, label, log, env=None, echo=True):
        record.append((step.script, list(step.argv), label, env))
        code = importlib.import_module(f"cli.{step.script}").main(list(step.argv))
        if code:
            raise ensemble.StepFailed(f"{step.script}.py failed for {label} (exit {code})")

    monkeypatch.setattr(ensemble, "RUNNER", inprocess)
    return record


def command(data, run, *extra, epochs=1, executor="debug"):
    return ["--data-dir", str(data), "--run-dir", str(run), "--folds", "fold0,fold1", "--modes", "resize",
            "--resize-size", "32", "--executor", executor, *extra, "--", *TINY, "--max-epochs", str(epochs)]


def scripts(record):
    return [(s, label) for s, _, label, _ in record]


def test_one_command_then_skip_then_resume(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "ens"
    assert ensemble_cli.main(command(tiny_data, run)) == 0
    out = capsys.readouterr().out
    assert scripts(calls) == [("train", "resize/fold0"), ("swa", "resize/fold0"), ("train", "resize/fold1"),
                              ("swa", "resize/fold1"), ("test", "oof/fold0"), ("test", "oof/fold1"), ("test", "oof"),
                              ("score", "search"), ("test", "test"), ("score", "check")]
    train_argv = calls[0][1]
    assert train_argv[-9:] == ["--data-dir", str(tiny_data), "--data-fold", "fold0", "--log-dir",
                               str(run / "resize" / "fold0"), "--input-size", "32", "--resize"][-9:]
    assert "--resume" not in train_argv
    for fold in ("fold0", "fold1"):
        assert (run / "resize" / f"{fold}_swa.pth").is_file()
    # out-of-fold predictions of both folds, merged in train.csv order
    train = kaggle.load_train(tiny_data)
    va = np.concatenate([folds.split(train.ids, f)[1] for f in ("fold0", "fold1")])
    oof = P.load(run / "oof-probabilities.npz")
    assert oof.split == "valid" and list(oof.ids) == list(train.ids[np.sort(va)])
    assert f"covers {len(va)} of the {len(train)} training images" in out
    assert "test.py flags: --threshold" in out  # the search ran
    sub = run / "ensemble-submission.csv"
    assert f"submission: {sub}" in out and "valid submission of 8 ids" in out
    assert P.load(run / "ensemble-probabilities.npz").models == [str(run / "resize" / f"{f}_swa.pth")
                                                                 for f in ("fold0", "fold1")]
    test_argv = calls[-2][1]
    assert "--tta" in test_argv and test_argv[:2] == [str(run / "resize" / "fold0_swa.pth"),
                                                       str(run / "resize" / "fold1_swa.pth")]
    # the submission uses the setting the out-of-fold search found and saved
    post = run / "postprocess.json"
    best, info = postprocess.load_setting(post)
    assert info.searched_on == str(run / "oof-probabilities.npz") and info.score >= info.default_score
    assert test_argv[test_argv.index("--post-config") + 1] == str(post)
    assert f"post-processing: {best.describe()} ({post}, searched on" in out

    # again: both folds are finished and skipped; the ensemble outputs are rebuilt (here with the defaults)
    swa_time = {f: (run / "resize" / f"{f}_swa.pth").stat().st_mtime_ns for f in ("fold0", "fold1")}
    calls.clear()
    assert ensemble_cli.main(command(tiny_data, run, "--default-post")) == 0
    out = capsys.readouterr().out
    assert "--post-config" not in calls[-2][1] and "(defaults)" in out
    assert "train" not in [s for s, _ in scripts(calls)] and "swa" not in [s for s, _ in scripts(calls)]
    assert out.count("exists, skipped") == 2

    # fold1 lost its SWA model (e.g. interrupted): it resumes from its last checkpoint, fold0 is left alone
    (run / "resize" / "fold1_swa.pth").unlink()
    calls.clear()
    assert ensemble_cli.main(command(tiny_data, run)) == 0
    assert scripts(calls)[:2] == [("train", "resize/fold1"), ("swa", "resize/fold1")]
    resume = calls[0][1]
    assert resume[resume.index("--resume") + 1] == str(run / "resize" / "fold1" / "checkpoints" /
                                                        "last-checkpoint-fold1.pth")
    assert pd.read_csv(run / "resize" / "fold1" / "metrics.csv")["epoch"].tolist() == [0]
    assert (run / "resize" / "fold0_swa.pth").stat().st_mtime_ns == swa_time["fold0"]

    # more epochs (or another loss, other data): the finished folds are not silently reused
    calls.clear()
    assert ensemble_cli.main(command(tiny_data, run, epochs=2)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resize/fold0:" in err and "max_epochs 1 -> 2" in err and "--overwrite" in err
    assert calls == []
    assert ensemble_cli.main(command(tiny_data, run, "--overwrite", epochs=2)) == 0
    for fold in ("fold0", "fold1"):
        assert pd.read_csv(run / "resize" / fold / "metrics.csv")["epoch"].tolist() == [0, 1]
        assert models.read_checkpoint(run / "resize" / f"{fold}_swa.pth")["meta"]["config"]["max_epochs"] == 2
    assert (run / "resize" / "fold1_swa.pth").is_file()


def test_a_failing_step_stops_with_one_line(tiny_data, tmp_path, capsys):
    """Real train.py in a real local job: it refuses its options (exit 2), which no retry could mend."""
    run = tmp_path / "bad"
    argv = command(tiny_data, run, executor="local")
    argv[argv.index("unet")] = "resnet1888"  # train.py refuses it
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "train.py failed for resize/fold0 (exit 2)" in err and "resnet1888" in err
    assert str(run / "logs" / "resize-fold0.log") in err
    log = (run / "logs" / "resize-fold0.log").read_text()
    assert "resnet1888" in log and log.count("train.py") == 1  # not retried
    assert len(list((run / "jobs" / "resize-fold0").glob("*_submitted.pkl"))) == 1
    assert "[resize/fold0]" in captured.out and "resize/fold1" not in captured.out  # nothing ran after it
    assert not list(run.rglob("*_swa.pth"))


@pytest.mark.parametrize("extra,passthrough,fragment", [
    ([], ["--data-fold", "fold3"], "--data-fold is set by ensemble.py"),
    ([], ["--resize"], "use ensemble.py --modes"),
    ([], ["--input-size=64"], "--pad-size / --resize-size"),
    ([], ["--resume", "x.pth"], "--resume is automatic"),
    ([], ["--log-d", "x"], "--log-dir is set by ensemble.py"),  # an abbreviation is recognised
    ([], ["--no-such-flag"], "train options: unrecognized arguments: --no-such-flag"),
    (["--modes", "pad,crop"], [], "--modes 'pad,crop'"),
    (["--folds", "fold0,fold0"], [], "repeats an entry"),
    (["--folds", "foldx"], [], "is not a fold name"),
    (["--test-args", "--split valid"], [], "--test-args: --split is set by ensemble.py"),
    (["--swa-args", "--output x.pth"], [], "--swa-args: --output is set by ensemble.py"),
    (["--executor", "pbs"], [], "--executor: invalid choice: 'pbs'"),
    (["--slurm-partition", "gpu"], [], "--slurm-partition applies to --executor slurm only (not local)"),
    (["--executor", "slurm", "--gpus", "0,1"], [], "with --executor slurm use --slurm-gpus-per-fold"),
    (["--executor", "slurm", "--slurm-time", "10:30"], [], "'10:30' is not MINUTES, H:MM:SS or D-H:MM:SS"),
    (["--executor", "slurm", "--slurm-time", "1:75:00"], [], "minutes and seconds must be below 60"),
    (["--executor", "slurm", "--slurm-mem", "lots"], [], "'lots' is not a size like 64G"),
    (["--executor", "slurm", "--slurm-gpus-per-fold", "a100:"], [], "'a100:' is not N or TYPE:N"),
    (["--executor", "slurm", "--slurm-extra", "partition=x"], [], "partition is set by ensemble.py: use "
                                                                    "--slurm-partition"),
    (["--executor", "slurm", "--slurm-extra", "qos=a", "qos=b"], [], "--slurm-extra: qos given twice"),
    (["--executor", "slurm", "--slurm-extra", "=x"], [], "'=x' is not KEY=VALUE"),
    (["--executor", "debug", "--parallel", "2"], [], "--executor debug runs one fold at a time"),
    (["--max-retries", "-1"], [], "--max-retries: must be >= 0, got -1"),
    (["--gpus", "abc"], [], "--gpus: 'abc': use auto, none, or GPU indices such as 0,1"),
    (["--gpus", "0,0"], [], "--gpus: '0,0' names a GPU twice"),
])
def test_bad_options_are_refused_before_anything_runs(tiny_data, tmp_path, calls, capsys, extra, passthrough,
                                                      fragment):
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "r"), *extra, "--", *TINY, *passthrough]
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert calls == [] and not (tmp_path / "r").exists()


def test_slurm_without_srun_is_refused_before_anything_runs(tiny_data, tmp_path, calls, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    argv = command(tiny_data, tmp_path / "r", executor="slurm")
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--executor slurm: no srun on PATH" in err
    assert calls == [] and not (tmp_path / "r").exists()


# -- the local executor's real processes, with a recording stand-in of the steps -----------------------------------
def _stand_in(step, label, log, env=None, echo=True):
    """A step that only leaves traces, shipped by value to the job processes: a `$` line in the fold's log, a JSON
    line in RUN/record.jsonl (its GPU, arguments, process), the SWA model. RUN/plan.json tells a fold's train step
    to fail once, always, be pre-empted once (SIGUSR2, as submitit's cluster signal), hang, or wait for company."""
    run = Path(log).parent.parent
    plans = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
    plan = plans.get(label, "") if step.script == "train" else ""
    cuda = (env or {}).get("CUDA_VISIBLE_DEVICES")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ python {step.script}.py for {label}\nrunning on GPU {cuda}\n")
    tag = label.replace("/", "-")
    running = run / "running"
    running.mkdir(exist_ok=True)
    (running / tag).touch()
    at_once = len(list(running.iterdir()))
    with open(run / "record.jsonl", "a") as fh:
        fh.write(json.dumps({"label": label, "script": step.script, "cuda": cuda, "argv": list(step.argv),
                             "pid": os.getpid(), "at_once": at_once}) + "\n")
    attempts = sum(1 for line in (run / "record.jsonl").read_text().splitlines()
                   if json.loads(line)["label"] == label and json.loads(line)["script"] == "train")
    try:
        deadline = time.monotonic() + 60  # only a bound on a hung test
        if plan == "fail" or (plan == "fail-once" and attempts == 1):
            raise jobs.StepFailed(f"train.py failed for {label} (exit 1): boom {attempts}; full output in {log}")
        if plan == "preempt-once" and attempts == 1:
            os.kill(os.getpid(), signal.SIGUSR2)  # submitit checkpoints the job and requeues it
            time.sleep(60)
        if plan == "hang":
            while time.monotonic() < deadline:
                time.sleep(0.05)
        (run / "started").mkdir(exist_ok=True)
        (run / "started" / tag).touch()
        if plan == "meet":  # wait until another fold's step has started
            while time.monotonic() < deadline and len(list((run / "started").iterdir())) < 2:
                time.sleep(0.05)
    finally:
        (running / tag).unlink()
    if step.script == "swa":
        out = Path(step.argv[list(step.argv).index("--output") + 1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()


@pytest.fixture
def stand_in(monkeypatch):
    """ensemble.RUNNER = _stand_in, pickled by value (the job processes cannot import this test module)."""
    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    monkeypatch.setattr(ensemble, "RUNNER", _stand_in)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "record.jsonl").read_text().splitlines()]


def _plan(run: Path, **plans) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "plan.json").write_text(json.dumps({k.replace("_", "/"): v for k, v in plans.items()}))


def test_folds_run_in_parallel_one_local_job_per_gpu(tiny_data, tmp_path, stand_in, capsys):
    run = tmp_path / "p"
    _plan(run, pad_fold0="meet", pad_fold1="meet")  # the first two folds must run at the same time
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(run), "--folds", "fold0,fold1", "--modes", "pad,resize",
            "--gpus", "3,5", "--", "--basenet", "unet", "--max-epochs", "2"]
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"running 2 folds at a time: GPU 3, GPU 5; job files in {run / 'jobs'}" in out
    records = _records(run)
    labels = ["pad/fold0", "pad/fold1", "resize/fold0", "resize/fold1"]
    fold_steps = [r for r in records if r["script"] in ("train", "swa")]
    assert sorted(r["label"] for r in fold_steps if r["script"] == "train") == labels
    for label in labels:
        mine = [r for r in fold_steps if r["label"] == label]
        assert {r["cuda"] for r in mine} in ({"3"}, {"5"})  # train and swa of a fold on one GPU, its own
        assert len({r["pid"] for r in mine}) == 1 and mine[0]["pid"] != os.getpid()  # one job process per fold
        assert all(r["argv"][r["argv"].index("--device") + 1] == "cuda" for r in mine)
        assert len(list((run / "jobs" / label.replace("/", "-")).glob("*_submitted.pkl"))) == 1
        assert f"[{label}] running on GPU" in out  # the job's output, echoed from its log with its prefix
    assert max(r["at_once"] for r in fold_steps) == 2
    assert all(r["cuda"] is None and r["pid"] == os.getpid() for r in records if r["script"] in ("test", "score"))
    assert [line for line in out.splitlines() if line.startswith("folds done")] == [
        "folds done 1/4", "folds done 2/4", "folds done 3/4", "folds done 4/4"]  # no epochs: no ETA


def test_a_job_that_fails_once_is_retried_from_its_checkpoint(tiny_data, tmp_path, stand_in, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # a local job keeps this process's GPUs (submitit hides them)
    run = tmp_path / "once"
    _plan(run, resize_fold0="fail-once")
    assert ensemble_cli.main(command(tiny_data, run, executor="local")) == 0
    out = capsys.readouterr().out
    trains = [r for r in _records(run) if r["script"] == "train"]
    assert [r["label"] for r in trains] == ["resize/fold0", "resize/fold0", "resize/fold1"]
    assert trains[0]["pid"] != trains[1]["pid"] and all(r["cuda"] == "7" for r in trains)
    assert ("[resize/fold0] train.py failed for resize/fold0 (exit 1): boom 1; full output in "
            f"{run / 'logs' / 'resize-fold0.log'}; trying again from its last checkpoint (attempt 2 of 3)") in out
    assert len(list((run / "jobs" / "resize-fold0").glob("*_submitted.pkl"))) == 2  # a second job
    assert (run / "resize" / "fold0_swa.pth").is_file() and (run / "resize" / "fold1_swa.pth").is_file()


def test_a_fold_that_always_fails_stops_the_others_with_one_line(tiny_data, tmp_path, stand_in, capsys):
    run = tmp_path / "always"
    _plan(run, resize_fold0="fail", resize_fold1="hang")
    argv = command(tiny_data, run, "--parallel", "2", "--max-retries", "1", executor="local")
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    log = run / "logs" / "resize-fold0.log"
    assert captured.err == (f"error: train.py failed for resize/fold0 (exit 1): boom 2; full output in {log} "
                            "(2 attempts)\n")
    assert "stopping resize/fold1 (it resumes from its last checkpoint next time)" in captured.out
    hung = next(r for r in _records(run) if r["label"] == "resize/fold1")
    assert not Path(f"/proc/{hung['pid']}").exists() or b"submitit" not in Path(
        f"/proc/{hung['pid']}/cmdline").read_bytes()  # its job process is gone
    assert not list(run.rglob("*_swa.pth")) and not any(r["script"] == "test" for r in _records(run))


def test_a_preempted_job_is_requeued_by_submitit(tiny_data, tmp_path, stand_in, capsys):
    run = tmp_path / "pre"
    _plan(run, resize_fold0="preempt-once")
    assert ensemble_cli.main(command(tiny_data, run, executor="local")) == 0
    trains = [r for r in _records(run) if r["label"] == "resize/fold0" and r["script"] == "train"]
    assert len(trains) == 2 and trains[0]["pid"] != trains[1]["pid"]  # started again ...
    folder = run / "jobs" / "resize-fold0"
    assert len(list(folder.glob("*_submitted.pkl"))) == 1  # ... by submitit, in the same job
    assert "Requeued job" in "".join(p.read_text() for p in folder.glob("*_log.*"))  # submitit says so
    assert (run / "resize" / "fold0_swa.pth").is_file()
    assert "trying again" not in capsys.readouterr().out


def test_the_debug_executor_retries_in_process(tiny_data, tmp_path, monkeypatch, capsys):
    """The fast path: --executor debug runs each fold in this process, with the same retries."""
    seen = []

    def flaky(step, label, log, env=None, echo=True):
        seen.append((step.script, label))
        if step.script == "train" and label == "resize/fold1":
            raise ensemble.StepFailed(f"train.py failed for {label} (exit 1): flaky; full output in {log}")
        if step.script == "swa":
            out = Path(step.argv[list(step.argv).index("--output") + 1])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()

    monkeypatch.setattr(ensemble, "RUNNER", flaky)
    assert ensemble_cli.main(command(tiny_data, tmp_path / "d", "--max-retries", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resize/fold1 (exit 1): flaky; full output in" in err
    assert err.endswith("(2 attempts)\n")
    assert seen == [("train", "resize/fold0"), ("swa", "resize/fold0"), ("train", "resize/fold1"),
                    ("train", "resize/fold1")]


def _failed_job(trace: str):
    """The exception submitit gives for a job whose function raised in another process (its traceback as text)."""
    from submitit.core.utils import FailedJobError

    return FailedJobError(f"Job (task=0) failed during processing with trace:\n----------------------\n{trace}\n"
                          "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'")


def test_what_went_wrong_in_a_job_is_one_line(tmp_path):
    from submitit.core.utils import UncompletedJobError

    task = jobs.Task("pad/fold3", tmp_path / "pad-fold3.log", None, lambda place: None)
    trace = "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
    refused = jobs.failure(_failed_job(trace + "engine.jobs.StepRefused: swa.py failed for pad/fold3 (exit 2): no "
                                               "models; full output in L"), task, None)
    assert refused == jobs.Failure("swa.py failed for pad/fold3 (exit 2): no models; full output in L", retry=False)
    failed = jobs.failure(_failed_job(trace + "engine.jobs.StepFailed: train.py failed for pad/fold3 (exit -9): "
                                              "killed; full output in L"), task, None)
    assert failed.retry and failed.message.startswith("train.py failed for pad/fold3 (exit -9): killed")
    other = jobs.failure(_failed_job(trace + "FileNotFoundError: [Errno 2] gone"), task, None)
    assert other.retry and other.message == ("the job of pad/fold3 ended without finishing ('FileNotFoundError: "
                                             f"[Errno 2] gone'); its log: {tmp_path / 'pad-fold3.log'}")
    lost = jobs.failure(UncompletedJobError("Job 12 (task: 0) with path /r/12_0_result.pkl\nhas not produced any "
                                            "output (state: NODE_FAIL)"), task, None)
    assert lost.retry and "ended without finishing ('Job 12 (task: 0) with path /r/12_0_result.pkl')" in lost.message


# -- Slurm: the sbatch script and the pickled job, through a fake sbatch (nothing is submitted) ----------------------
def test_slurm_jobs_ask_for_what_the_flags_say(tiny_data, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("srun", "exit 0"), ("sbatch", 'echo "Submitted batch job 42"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = tmp_path / "slurm"
    argv = command(tiny_data, run, "--slurm-partition", "gpu", "--slurm-gpus-per-fold", "a100:2",
                   "--slurm-cpus-per-fold", "8", "--slurm-time", "2-00:00:00", "--slurm-mem", "64G", "--slurm-extra",
                   "account=proj", "exclusive", "--max-retries", "3", executor="slurm")
    cut = argv.index("--device")
    argv = argv[:cut] + argv[cut + 2:]  # the job's GPUs (train.py's default device: auto)
    opts = ensemble_cli.parse(argv)
    todo = ensemble.jobs_of(opts)
    where = ensemble.places(opts, len(todo))
    assert [p.name for p in where] == ["Slurm job 1", "Slurm job 2"]  # Slurm queues every fold at once
    one = ensemble_cli.parse(command(tiny_data, run, "--parallel", "1", executor="slurm"))
    assert len(ensemble.places(one, 2)) == 1
    task = ensemble.tasks_of(todo[:1], opts)[0]
    job = jobs.submit(task.executor, task.build(where[0]))
    assert job.job_id == "42"
    folder = run / "jobs" / "resize-fold0"
    script = (folder / "42_submission.sh").read_text()
    lines = set(script.splitlines())
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=a100:2", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --time=2880", "#SBATCH --mem=64G", "#SBATCH --account=proj", "#SBATCH --exclusive",
                 "#SBATCH --job-name=tgs-resize-fold0", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@90", f"#SBATCH --output={folder}/%j_0_log.out"):
        assert line in lines, (line, script)
    assert f"export PYTHONPATH={ensemble.ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" in lines
    assert any(line.startswith("srun ") and f"-m submitit.core._submit {folder}" in line for line in lines)
    assert task.executor.max_num_timeout == 3  # timed-out jobs: requeued at most --max-retries times
    # what was pickled: only the fold's commands; train.py under torchrun on the job's 2 GPUs, no GPU override
    from submitit.core.utils import DelayedSubmission

    fold = DelayedSubmission.load(folder / "42_submitted.pkl").function
    assert isinstance(fold, jobs.FoldJob) and fold.env == {} and fold.runner is jobs.run_step
    assert fold.train.launcher == ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert fold.train.describe().startswith("torchrun --standalone --nproc_per_node=2 train.py ")
    assert "--device" not in fold.train.argv and fold.swa.launcher == ()
    assert fold.swa.argv[:4] == ("--input", str(run / "resize" / "fold0" / "models"), "--output",
                                 str(run / "resize" / "fold0_swa.pth"))
    assert fold.steps() == [fold.train, fold.swa]  # nothing to resume from yet


def test_dry_run_prints_the_commands_and_runs_nothing(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "dry"
    assert ensemble_cli.main(command(tiny_data, run, "--dry-run", executor="slurm")) == 0
    out = capsys.readouterr().out
    assert "[resize/fold0] would run: train.py " in out and "[resize/fold1] would run: swa.py " in out
    assert "[test] would run: test.py " in out and calls == [] and not run.exists()


def test_cpu_folds_in_parallel_with_real_subprocesses(tiny_data, tmp_path, capsys):
    """--parallel 2 on the CPU: two real train.py/swa.py processes at a time, each given cores/2 threads."""
    run = tmp_path / "cpu2"
    cut = TINY.index("--threads")
    tiny = TINY[:cut] + TINY[cut + 2:]  # ensemble.py chooses the threads
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(run), "--folds", "fold0,fold1,fold2", "--modes", "resize",
            "--resize-size", "32", "--parallel", "2", "--", *tiny, "--max-epochs", "1"]
    opts = ensemble_cli.parse(argv)
    ensemble.run_folds(ensemble.jobs_of(opts), opts)
    out = capsys.readouterr().out
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"running 2 folds at a time: process 1 ({threads} thread" in out
    for fold in ("fold0", "fold1", "fold2"):
        loaded = models.load(run / "resize" / f"{fold}_swa.pth")
        assert loaded.meta["fold"] == fold and loaded.input_spec.mode == "resize"
        log = (run / "logs" / f"resize-{fold}.log").read_text()
        commands = [line for line in log.splitlines() if line.startswith("$ ")]
        assert len(commands) == 2 and all(f"--threads {threads}" in c for c in commands)  # train.py, swa.py
    # every echoed line carries its fold's prefix (no lines torn between two processes)
    lines = [s for s in out.splitlines() if s.strip() and not s.startswith(("running ", "folds done"))]
    assert all(s.startswith("[resize/fold") for s in lines)
    with pytest.raises(ensemble.UserError, match="--parallel: must be >= 0, got -1"):
        ensemble_cli.parse(["--data-dir", str(tiny_data), "--parallel", "-1"])


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(text.encode() in a for a in args):
            found.append(b" ".join(args).decode(errors="replace"))
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_sigterm_stops_every_running_fold(tiny_data, tmp_path):
    """SIGTERM to ensemble.py while two folds train in parallel: both train.py processes are stopped (none keeps
    training unattended), ensemble.py exits 130, and each fold keeps its last checkpoint to resume from. It runs
    with SIGINT ignored, as in the background (``&``, nohup): submitit cancels a local job with SIGINT all the same."""
    import subprocess

    run = tmp_path / "term"
    cut = TINY.index("--threads")
    argv = [sys.executable, str(ensemble.ROOT / "ensemble.py"), "--data-dir", str(tiny_data), "--run-dir", str(run),
            "--folds", "fold0,fold1", "--modes", "resize", "--resize-size", "32", "--parallel", "2", "--",
            *TINY[:cut], *TINY[cut + 2:], "--max-epochs", "500"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ensemble.ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    checkpoints = [run / "resize" / f / "checkpoints" / f"last-checkpoint-{f}.pth" for f in ("fold0", "fold1")]
    try:
        deadline = time.monotonic() + 240  # generous: only a bound on a hung test, nothing is timed
        while not all(c.is_file() for c in checkpoints):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the folds never wrote a checkpoint"
            time.sleep(0.2)
        assert len([c for c in _processes_mentioning(str(run)) if "train.py" in c]) == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err == "interrupted\n"  # nothing else (no job's traceback)
    assert "stopping resize/fold0" in out and "stopping resize/fold1" in out
    assert not _processes_mentioning(str(run))  # no orphan keeps training
    for fold, c in zip(("fold0", "fold1"), checkpoints):
        assert models.read_checkpoint(c)["meta"]["fold"] == fold  # a good checkpoint to resume from
    assert not list(run.rglob("*_swa.pth"))


# -- progress and time left, from hand-built run files (no clock) --------------------------------------------------
def _fold_files(root: Path, label: str, times=(), epochs=None) -> watch.FoldView:
    """A fold's view over hand-written files: metrics.csv with these epoch times, config.yaml with max_epochs."""
    run = root / label
    run.mkdir(parents=True)
    if times:
        rows = "".join(f"{i},0.1,{t}\n" for i, t in enumerate(times))
        (run / "metrics.csv").write_text("epoch,train_loss,time_s\n" + rows)
    if epochs is not None:
        (run / "config.yaml").write_text(f"# resolved\nmax_epochs: {epochs}\nbasenet: unet\n")
    return watch.FoldView(label, root / f"{label}.log", run / "metrics.csv", run / "config.yaml")


def test_time_left_from_the_epochs_done_so_far(tmp_path):
    done = _fold_files(tmp_path, "a", [60.0] * 10, epochs=10)
    running = _fold_files(tmp_path, "b", [50.0, 70.0, 60.0, 60.0], epochs=10)
    waiting = _fold_files(tmp_path, "c")  # not started: no files yet, the config asked for says 10 epochs
    waiting.epochs = 10
    views = [done, running, waiting]
    for v in views:
        v.refresh()
    done.state, running.state = "done", "train"
    # 60 s per epoch (840 s / 14 epochs); left: b 6 epochs, c 10; 2 at a time: c's 10 epochs are the longest
    assert watch.eta_seconds(views, 2) == pytest.approx(600.0)
    assert watch.eta_seconds(views, 1) == pytest.approx(960.0)  # one after another: 16 epochs
    assert watch.eta_seconds(views, 8) == pytest.approx(600.0)  # no more at once than folds left
    assert watch.status_line(views, 2) == "folds done 1/3; ETA 10 min"
    assert running.step() == "train epoch 5/10" and waiting.step() == "waiting"
    assert watch.running_text(views, 1) == "b train epoch 5/10; ETA 16 min"
    waiting.epochs = None  # a fold whose length is unknown: no ETA
    assert watch.eta_seconds(views, 2) is None and watch.status_line(views, 2) == "folds done 1/3"
    nothing = [_fold_files(tmp_path / "n", "x", epochs=5)]
    nothing[0].refresh()
    assert watch.eta_seconds(nothing, 1) is None  # no epoch finished anywhere yet
    running.state = waiting.state = "done"
    assert watch.eta_seconds(views, 2) == 0.0 and watch.status_line(views, 2) == "folds done 3/3"


@pytest.mark.parametrize("seconds,text", [(0, "0 s"), (59.4, "59 s"), (59.6, "1 min"), (89, "1 min"), (90, "2 min"),
                                          (3599, "1 h 0 min"), (18600, "5 h 10 min"), (183600, "2 d 3 h")])
def test_durations_in_words(seconds, text):
    assert watch.duration(seconds) == text


def test_the_monitor_follows_logs_and_says_each_finished_fold(tmp_path):
    v = _fold_files(tmp_path, "resize-fold0", epochs=3)
    v.label = "resize/fold0"
    v.log.write_text("$ python old run\n")  # a previous run's output: not echoed again
    said = []
    monitor = watch.Monitor([v, _fold_files(tmp_path, "pad-fold0", [30.0, 30.0], epochs=2)], width=1,
                            interactive=False, write=said.append)
    monitor.views["pad-fold0"].state = "done"
    monitor.start("resize/fold0")
    assert v.state == "queued" and said == []
    with open(v.log, "a") as fh:
        fh.write("$ /venv/python /repo/train.py --max-epochs 3\nepoch   0 ...\nepoch   1 (half a li")
    with open(v.log, "ab") as fh:
        fh.write("\u00b5".encode()[:1])  # half of a two-byte character
    (v.metrics.parent / "metrics.csv").write_text("epoch,time_s\n0,30\n")
    monitor.update()
    assert said == ["[resize/fold0] $ /venv/python /repo/train.py --max-epochs 3", "[resize/fold0] epoch   0 ..."]
    assert v.step() == "train epoch 2/3"
    assert watch.running_text(list(monitor.views.values()), 1) == "resize/fold0 train epoch 2/3; ETA 1 min"
    with open(v.log, "ab") as fh:
        fh.write("\u00b5".encode()[1:] + b"ne)\n$ /venv/python /repo/swa.py --input x\nwrote x_swa.pth")
    monitor.update()
    assert said[2:] == ["[resize/fold0] epoch   1 (half a li\u00b5ne)",
                        "[resize/fold0] $ /venv/python /repo/swa.py --input x"]
    assert v.step() == "swa"
    monitor.end("resize/fold0", ok=True)  # the unfinished last line is shown, then one status line
    assert said[4:] == ["[resize/fold0] wrote x_swa.pth", "folds done 2/2"]


# -- self-training rounds ---------------------------------------------------------------------------------------------
def test_a_pseudo_round_with_fold_labels_is_honest_and_resumable(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "pseudo"
    argv = command(tiny_data, run, "--pseudo-rounds", "1", "--pseudo-confidence", "0", "--pseudo-fraction", "0.5")
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    # fold k's labels come from test predictions of fold k's own models only (the files that were read)
    for fold in ("fold0", "fold1"):
        test_npz = run / "pseudo" / f"{fold}-test-probabilities.npz"
        assert P.load(test_npz).models == [str(run / "resize" / f"{fold}_swa.pth")]
        labels = pseudo.load(run / "pseudo" / f"{fold}-labels.npz")
        assert labels.provenance["source"] == str(test_npz)
    # round 1 trains every fold again, each with its own labels, into RUN/round1
    round1 = [(argv_, label) for s, argv_, label, _ in calls if s == "train"][2:]
    assert [label for _, label in round1] == ["resize/fold0", "resize/fold1"]
    for (targv, label), fold in zip(round1, ("fold0", "fold1")):
        assert targv[targv.index("--pseudo-labels") + 1] == str(run / "pseudo" / f"{fold}-labels.npz")
        assert targv[targv.index("--log-dir") + 1] == str(run / "round1" / "resize" / fold)
        assert "--pseudo-fraction" in targv
        meta = models.read_checkpoint(run / "round1" / "resize" / f"{fold}_swa.pth")["meta"]
        assert meta["pseudo_labels"]["path"] == str(run / "pseudo" / f"{fold}-labels.npz")
    assert (run / "round1" / "ensemble-submission.csv").is_file() and (run / "ensemble-submission.csv").is_file()
    assert "round 0:" in out and "round 1:" in out and "honest" in out and "OPTIMISTIC" not in out
    import re

    for r, folder in ((0, run), (1, run / "round1")):  # the default setting's score, then the nested estimate
        default, nested = map(float, re.search(rf"round {r}: (\d\.\d+)  (\d\.\d+)", out).groups())
        info = json.loads((folder / "postprocess.json").read_text())
        assert nested == pytest.approx(info["default_score"] + info["chosen_held_out_gain"], abs=2e-6)
        assert default == pytest.approx(info["default_score"], abs=2e-6)  # the search scored the same images
    # a rerun resumes inside the rounds: every fold of both rounds is finished and skipped, and so is what was made
    # from them (predictions, search, submission, labels)
    labels = {f: (run / "pseudo" / f"{f}-labels.npz").read_bytes() for f in ("fold0", "fold1")}
    calls.clear()
    assert ensemble_cli.main(argv) == 0
    assert calls == []
    out = capsys.readouterr().out
    assert out.count("exists, skipped") == 4 and out.count("search and submission in") == 2
    assert out.count("was made from these models and options, reused") == 2 and "round 1:" in out
    # the outputs made again (their record gone), yet the labels that round 1 trained on are kept as they are
    (run / "outputs.made-from.json").unlink()
    (run / "ensemble-submission.csv").unlink()
    assert ensemble_cli.main(argv) == 0
    assert [label for _, label in scripts(calls)] == ["oof/fold0", "oof/fold1", "oof", "search", "test", "check"]
    assert "reused" in capsys.readouterr().out
    assert labels == {f: (run / "pseudo" / f"{f}-labels.npz").read_bytes() for f in ("fold0", "fold1")}


def test_ensemble_labels_say_the_score_is_optimistic(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "pseudo-ens"
    assert ensemble_cli.main(command(tiny_data, run, "--pseudo-rounds", "1", "--pseudo-source", "ensemble",
                                     "--pseudo-confidence", "0")) == 0
    out = capsys.readouterr().out
    assert "OPTIMISTIC" in out and (run / "pseudo-labels.npz").is_file()
    round1 = [a for s, a, _, _ in calls if s == "train"][2:]
    assert all(a[a.index("--pseudo-labels") + 1] == str(run / "pseudo-labels.npz") for a in round1)


@pytest.mark.parametrize("extra,passthrough,fragment", [
    (["--pseudo-fraction", "0.5"], [], "--pseudo-fraction goes with --pseudo-rounds N"),
    ([], ["--pseudo-labels", "x.npz"], "--pseudo-labels is set by ensemble.py for every fold; use ensemble.py "
                                        "--pseudo-rounds"),
    (["--pseudo-rounds", "1", "--pseudo-fraction", "0.01"], [], "puts no pseudo-labelled image into a batch"),
    (["--pseudo-rounds", "-1"], [], "--pseudo-rounds: must be >= 0"),
])
def test_bad_pseudo_options_are_refused_before_anything_runs(tiny_data, tmp_path, calls, capsys, extra,
                                                             passthrough, fragment):
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "r"), *extra, "--", *TINY, *passthrough]
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert calls == [] and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_one_honest_pseudo_round_is_scored_next_to_round_0(tmp_path, calls, capsys):
    """A synthetic set and a small model: the summary prints round 0's and round 1's honest out-of-fold scores."""
    import re

    from datasets.synthetic import write_dataset

    data = tmp_path / "data"
    write_dataset(data, n_train=200, n_test=300, seed=21)
    argv = ["--data-dir", str(data), "--run-dir", str(tmp_path / "run"), "--folds", "fold0,fold1", "--modes",
            "resize", "--resize-size", "64", "--executor", "debug", "--pseudo-rounds", "1", "--pseudo-confidence",
            "0.8", "--", "--basenet", "unet", "--encoder-width", "8", "--decoder-channels", "16", "--center-channels",
            "32", "--input-upsample", "1", "--oc", "center", "--batch-size", "16", "--learning-rate", "3e-3",
            "--warmup-epochs", "2", "--max-epochs", "4", "--dataload-workers-nums", "0", "--device", "cpu"]
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    scores = {int(r): float(v) for r, v in re.findall(r"round (\d): (\d\.\d+)", out)}
    assert set(scores) == {0, 1} and all(0 <= v <= 1 for v in scores.values()) and "honest" in out
    print(f"out-of-fold score: round 0 {scores[0]:.4f}, round 1 {scores[1]:.4f} (honest)")


def test_mosaics_built_once_mosaic_folds_and_rules_searched_and_submitted(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "jig"
    argv = command(tiny_data, run, "--mosaics", "--mosaic-folds")
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert ("mosaic", "mosaics") in scripts(calls) and (run / "mosaics" / "mosaics.csv").is_file()
    assert f"[folds] wrote {run / 'folds.csv'}" in out
    train_argv = next(a for s, a, _, _ in calls if s == "train")
    assert train_argv[train_argv.index("--folds-file") + 1] == str(run / "folds.csv")
    search = next(a for s, a, label, _ in calls if label == "search")
    assert search[search.index("--mosaics") + 1] == str(run / "mosaics" / "mosaics.csv")
    # grouped by the mosaic folds the models were trained on: a fold's tiles and its mosaics' masks are unknown
    assert search[search.index("--oof-folds") + 1] == "fold0,fold1"
    assert search[search.index("--folds-file") + 1] == str(run / "folds.csv")
    submit = next(a for s, a, label, _ in calls if label == "test")
    assert "--mosaics" in submit and "--post-config" in submit
    # a rerun reuses the mosaics built for this data, and the folds
    calls.clear()
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "mosaics.csv exists for this data, reused" in out and ("mosaic", "mosaics") not in scripts(calls)


@pytest.mark.parametrize("extra,fragment", [
    (["--mosaic-folds"], "--mosaic-folds needs --mosaics"),
    (["--mosaics", "--mosaic-folds", "--folds-file", "f.csv"], "leave out --folds-file"),
    (["--test-args", "--mosaic-rules vertical"], "--test-args: --mosaic-rules is set by ensemble.py"),
])
def test_bad_mosaic_options_are_refused(tiny_data, tmp_path, calls, capsys, extra, fragment):
    assert ensemble_cli.main(command(tiny_data, tmp_path / "r", *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert calls == []
