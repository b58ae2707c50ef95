"""ensemble.py: one command from training to the ensemble submission; finished folds are skipped, interrupted ones
resume, folds made from other data or options are refused (or retrained with --overwrite); a failing step stops
everything with one line; pass-through options are checked before anything runs. Folds are submitit jobs: the
local executor's real processes (one per GPU, or sharing the cores; retried after a failure; requeued after a
pre-emption; all stopped by a failure or a SIGTERM), Slurm's sbatch script (fake srun/sbatch, nothing submitted),
and the progress shown while they run (hand-built metrics files).

A fold's job is typed data (its training configuration and SWA options in its job folder) run by the engine's entry
point; the tests check those typed options. To keep the tests fast, the steps often run in-process (the fold steps'
runner replaced, --executor debug), or a recording stand-in of the steps is shipped by value to the job processes
(cloudpickle); some tests run the real fold jobs.
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

import models
from cli import ensemble as ensemble_cli
from datasets import folds, kaggle
from engine import ensemble, jobs, watch
from tests.tiny import TINY_MODEL as TINY
from tgs import postprocess, pseudo
from tgs import probabilities as P


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def calls(monkeypatch):
    """Run every step in this process; record (step name, its typed options, label, env): a fold's steps as the
    TrainConfig / SwaOptions its job file gives, the ensemble's own steps as their typed options."""
    from engine import fold_job
    from engine.ensemble import steps, training

    record = []

    def inprocess(step, label, log, env=None, echo=True):
        spec = fold_job.FoldSpec.read(step.folder)
        record.append((step.name, spec.train_config() if step.name == "train" else spec.swa_options(), label, env))
        code = fold_job.main([step.folder, step.name])
        if code:
            raise jobs.StepFailed(f"the {step.name} step failed for {label} (exit {code})")

    here = steps.run_here

    def recorded(step, label, log, dry=False):
        if not dry:
            record.append((step.name, step.opts if isinstance(step, steps.Predict) else step, label, None))
        here(step, label, log, dry)

    monkeypatch.setattr(training, "RUNNER", inprocess)
    monkeypatch.setattr(steps, "run_here", recorded)
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
                              ("swa", "resize/fold1"), ("predict", "oof/fold0"), ("predict", "oof/fold1"),
                              ("predict", "oof"), ("search", "search"), ("predict", "test"), ("check", "check")]
    cfg = calls[0][1]
    assert (cfg.data.data_dir, cfg.data.data_fold, cfg.run.log_dir, cfg.data.input_size, cfg.data.mode) == (
        str(tiny_data), "fold0", str(run / "resize" / "fold0"), 32, "resize")
    assert cfg.optim.max_epochs == 1 and cfg.model.basenet == "unet"  # the pass-through options
    assert cfg.run.resume is None
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
    test_opts = calls[-2][1]
    assert test_opts.tta and test_opts.models == (str(run / "resize" / "fold0_swa.pth"),
                                                  str(run / "resize" / "fold1_swa.pth"))
    # the submission uses the setting the out-of-fold search found and saved
    post = run / "postprocess.json"
    best, info = postprocess.load_setting(post)
    assert info.searched_on == str(run / "oof-probabilities.npz") and info.score >= info.default_score
    assert test_opts.post == best and test_opts.post_source.startswith(f"{post}, searched on")
    assert f"post-processing: {best.describe()} ({post}, searched on" in out

    # again: both folds are finished and skipped; the ensemble outputs are rebuilt (here with the defaults)
    swa_time = {f: (run / "resize" / f"{f}_swa.pth").stat().st_mtime_ns for f in ("fold0", "fold1")}
    calls.clear()
    assert ensemble_cli.main(command(tiny_data, run, "--default-post")) == 0
    out = capsys.readouterr().out
    assert calls[-2][1].post_source == "defaults" and "(defaults)" in out
    assert "train" not in [s for s, _ in scripts(calls)] and "swa" not in [s for s, _ in scripts(calls)]
    assert out.count("exists, skipped") == 2

    # fold1 lost its SWA model (e.g. interrupted): it resumes from its last checkpoint, fold0 is left alone
    (run / "resize" / "fold1_swa.pth").unlink()
    calls.clear()
    assert ensemble_cli.main(command(tiny_data, run)) == 0
    assert scripts(calls)[:2] == [("train", "resize/fold1"), ("swa", "resize/fold1")]
    assert calls[0][1].run.resume == str(run / "resize" / "fold1" / "checkpoints" / "last-checkpoint-fold1.pth")
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
    """A real fold job in a real local job: training refuses its options (exit 2), which no retry could mend."""
    run = tmp_path / "bad"
    argv = command(tiny_data, run, executor="local")
    argv[argv.index("unet")] = "resnet1888"  # the model builder refuses it
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "the train step failed for resize/fold0 (exit 2)" in err and "resnet1888" in err
    assert str(run / "logs" / "resize-fold0.log") in err
    log = (run / "logs" / "resize-fold0.log").read_text()
    assert "resnet1888" in log and log.count("-m engine.fold_job") == 1  # not retried
    assert len(list((run / "jobs" / "resize-fold0").glob("*_submitted.pkl"))) == 1
    assert "[resize/fold0]" in captured.out and "resize/fold1" not in captured.out  # nothing ran after it
    assert not list(run.rglob("*_swa.pth"))


@pytest.mark.parametrize("extra,passthrough,fragment", [
    ([], ["--data-fold", "fold3"], "--data-fold is set by ensemble.py"),
    ([], ["--resize"], "use ensemble.py --modes"),
    ([], ["--input-size=64"], "use ensemble.py --pad-size / --resize-size / --resize-pad-size"),  # every mode's
    ([], ["--input-mode", "resize"], "--input-mode is set by ensemble.py for every fold; use ensemble.py --modes"),
    ([], ["--pseudo-weight", "2"], "--pseudo-weight is set by ensemble.py for every fold; use ensemble.py "
                                   "--pseudo-weight"),
    ([], ["--resume", "x.pth"], "--resume is automatic"),
    ([], ["--log-d", "x"], "--log-dir is set by ensemble.py"),  # an abbreviation is recognised
    ([], ["--no-such-flag"], "train options: unrecognized arguments: --no-such-flag"),
    (["--modes", "pad,crop"], [], "--modes 'pad,crop'"),
    (["--folds", "fold0,fold0"], [], "--folds: 'fold0,fold0' names a fold twice"),
    (["--folds", "foldx"], [], "is not a fold name"),
    (["--test-args", "--split valid"], [], "--test-args: --split is set by ensemble.py"),
    (["--swa-args", "--output x.pth"], [], "--swa-args: --output is set by ensemble.py"),
    (["--swa-args", "--data-fold fold1"], [], "--swa-args: --data-fold is set by ensemble.py; use ensemble.py --folds"),
    (["--test-args=--tta"], [], "--test-args: --tta is set by ensemble.py; use ensemble.py --no-tta"),
    (["--test-args", "x.pth"], [], "--test-args: MODELS is set by ensemble.py (every fold's SWA model)"),
    (["--test-args=--mosaic-context"], [], "--test-args: --mosaic-context is not used by ensemble.py"),
    (["--test-args", "--mosaics m.csv"], [], "--test-args: --mosaics is set by ensemble.py; use ensemble.py --mosaics"),
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
    line in RUN/record.jsonl (its GPU, its typed options from the job file, process), the SWA model. RUN/plan.json
    tells a fold's train step to fail once, always, be pre-empted once (SIGUSR2, as submitit's cluster signal), hang,
    or wait for company."""
    from engine import fold_job

    spec = fold_job.FoldSpec.read(step.folder)
    options = spec.train if step.name == "train" else spec.swa
    run = Path(log).parent.parent
    plans = json.loads((run / "plan.json").read_text()) if (run / "plan.json").is_file() else {}
    plan = plans.get(label, "") if step.name == "train" else ""
    cuda = (env or {}).get("CUDA_VISIBLE_DEVICES")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ the {step.name} step of {label}\nrunning on GPU {cuda}\n")
    tag = label.replace("/", "-")
    running = run / "running"
    running.mkdir(exist_ok=True)
    (running / tag).touch()
    at_once = len(list(running.iterdir()))
    with open(run / "record.jsonl", "a") as fh:
        fh.write(json.dumps({"label": label, "script": step.name, "cuda": cuda, "options": options,
                             "pid": os.getpid(), "at_once": at_once}) + "\n")
    attempts = sum(1 for line in (run / "record.jsonl").read_text().splitlines()
                   if json.loads(line)["label"] == label and json.loads(line)["script"] == "train")
    try:
        deadline = time.monotonic() + 60  # only a bound on a hung test
        if plan == "fail" or (plan == "fail-once" and attempts == 1):
            raise jobs.StepFailed(f"the train step failed for {label} (exit 1): boom {attempts}; full output in {log}")
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
    if step.name == "swa":
        out = Path(spec.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()


@pytest.fixture
def stand_in(monkeypatch):
    """The fold steps' runner = _stand_in, pickled by value (the job processes cannot import this test module); the
    ensemble's own steps (predictions of the stand-in's empty models) are skipped."""
    import cloudpickle

    from engine.ensemble import pipeline, training

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    monkeypatch.setattr(training, "RUNNER", _stand_in)
    monkeypatch.setattr(pipeline, "ensemble_outputs", lambda jobs, opts, data: {
        "oof": "-", "submission": "-", "probabilities": "-"})
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
        assert all(r["options"]["device"] == "cuda" for r in mine)
        assert len(list((run / "jobs" / label.replace("/", "-")).glob("*_submitted.pkl"))) == 1
        assert f"[{label}] running on GPU" in out  # the job's output, echoed from its log with its prefix
    assert max(r["at_once"] for r in fold_steps) == 2
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
    assert ("[resize/fold0] the train step failed for resize/fold0 (exit 1): boom 1; full output in "
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
    assert captured.err == (f"error: the train step failed for resize/fold0 (exit 1): boom 2; full output in {log} "
                            "(2 attempts)\n")
    assert "stopping resize/fold1 (it resumes from its last checkpoint next time)" in captured.out
    hung = next(r for r in _records(run) if r["label"] == "resize/fold1")
    assert not Path(f"/proc/{hung['pid']}").exists() or b"submitit" not in Path(
        f"/proc/{hung['pid']}/cmdline").read_bytes()  # its job process is gone
    assert not list(run.rglob("*_swa.pth")) and not (run / "oof").exists()


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

    from engine import fold_job
    from engine.ensemble import training

    def flaky(step, label, log, env=None, echo=True):
        seen.append((step.name, label))
        if step.name == "train" and label == "resize/fold1":
            raise jobs.StepFailed(f"the train step failed for {label} (exit 1): flaky; full output in {log}")
        if step.name == "swa":
            out = Path(fold_job.FoldSpec.read(step.folder).output)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.touch()

    monkeypatch.setattr(training, "RUNNER", flaky)
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
    assert any(line.startswith("srun ") and f"from engine.jobs import job_main; job_main(sys.argv[1])' {folder}" in line
               for line in lines)  # submitit's job runner, with engine.jobs.job_main's additions
    assert task.executor.max_num_timeout == 3  # timed-out jobs: requeued at most --max-retries times
    # what was pickled: only the fold's steps of the engine's entry point, its typed job in the job folder; training
    # under torchrun on the job's 2 GPUs, no GPU override
    from submitit.core.utils import DelayedSubmission

    from engine import fold_job

    fold = DelayedSubmission.load(folder / "42_submitted.pkl").function
    assert isinstance(fold, jobs.FoldJob) and fold.env == {} and fold.runner is jobs.run_step
    assert fold.train.launcher == ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    assert fold.train.command()[-4:] == ["-m", "engine.fold_job", str(folder), "train"]
    assert fold.train.describe() == f"torchrun --standalone --nproc_per_node=2 -m engine.fold_job {folder} train"
    assert fold.swa.launcher == () and fold.swa.command()[-2:] == [str(folder), "swa"]
    spec = fold_job.FoldSpec.read(folder)
    assert spec.train["device"] == "auto" and spec.train["data_fold"] == "fold0"
    assert spec.swa["inputs"] == [str(run / "resize" / "fold0" / "models")]
    assert spec.output == str(run / "resize" / "fold0_swa.pth")
    assert spec.train_config().run.resume is None  # nothing to resume from yet
    assert fold.steps() == [fold.train, fold.swa]


def test_dry_run_prints_the_commands_and_runs_nothing(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "dry"
    assert ensemble_cli.main(command(tiny_data, run, "--dry-run", executor="slurm")) == 0
    out = capsys.readouterr().out
    assert "[resize/fold0] would run: train " in out and "[resize/fold1] would run: swa " in out
    assert "data_fold=fold1" in out and "max_epochs=1" in out and f"output={run / 'resize' / 'fold1_swa.pth'}" in out
    assert "[test] would run: predict " in out and "[check] would run: check " in out
    assert calls == [] and not run.exists()


def test_cpu_folds_in_parallel_with_real_subprocesses(tiny_data, tmp_path, capsys):
    """--parallel 2 on the CPU: two real fold jobs at a time, each given cores/2 threads."""
    run = tmp_path / "cpu2"
    cut = TINY.index("--threads")
    tiny = TINY[:cut] + TINY[cut + 2:]  # ensemble.py chooses the threads
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(run), "--folds", "fold0,fold1,fold2", "--modes", "resize",
            "--resize-size", "32", "--parallel", "2", "--", *tiny, "--max-epochs", "1"]
    from engine import fold_job

    opts = ensemble_cli.parse(argv)
    ensemble.run_folds(ensemble.jobs_of(opts), opts)
    out = capsys.readouterr().out
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"running 2 folds at a time: process 1 ({threads} thread" in out
    for fold in ("fold0", "fold1", "fold2"):
        loaded = models.load(run / "resize" / f"{fold}_swa.pth")
        assert loaded.meta["config"]["data_fold"] == fold and loaded.input_spec.mode == "resize"
        log = (run / "logs" / f"resize-{fold}.log").read_text()
        commands = [line for line in log.splitlines() if line.startswith("$ ")]
        assert len(commands) == 2 and all("-m engine.fold_job" in c for c in commands)  # train, swa
        spec = fold_job.FoldSpec.read(run / "jobs" / f"resize-{fold}")
        assert spec.train["threads"] == threads and spec.swa["threads"] == threads
    # every echoed line carries its fold's prefix (no lines torn between two processes)
    lines = [s for s in out.splitlines() if s.strip() and not s.startswith(("running ", "folds done"))]
    assert all(s.startswith("[resize/fold") for s in lines)
    with pytest.raises(jobs.UserError, match="--parallel: must be >= 0, got -1"):
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
    """SIGTERM to ensemble.py while two folds train in parallel: both training processes are stopped (none keeps
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
        assert len([c for c in _processes_mentioning(str(run)) if c.split()[-1:] == ["train"]]) == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and err == "interrupted\n"  # nothing else (no job's traceback)
    assert "stopping resize/fold0" in out and "stopping resize/fold1" in out
    assert not _processes_mentioning(str(run))  # no orphan keeps training
    for fold, c in zip(("fold0", "fold1"), checkpoints):
        assert models.read_checkpoint(c)["meta"]["config"]["data_fold"] == fold  # a good checkpoint to resume from
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
        fh.write("$ /venv/python -m engine.fold_job /r/jobs/resize-fold0 train\nepoch   0 ...\nepoch   1 (half a li")
    with open(v.log, "ab") as fh:
        fh.write("\u00b5".encode()[:1])  # half of a two-byte character
    (v.metrics.parent / "metrics.csv").write_text("epoch,time_s\n0,30\n")
    monitor.update()
    assert said == ["[resize/fold0] $ /venv/python -m engine.fold_job /r/jobs/resize-fold0 train",
                    "[resize/fold0] epoch   0 ..."]
    assert v.step() == "train epoch 2/3"
    assert watch.running_text(list(monitor.views.values()), 1) == "resize/fold0 train epoch 2/3; ETA 1 min"
    with open(v.log, "ab") as fh:
        fh.write("\u00b5".encode()[1:] + b"ne)\n$ /venv/python -m engine.fold_job /r/jobs/resize-fold0 swa\n"
                 b"wrote x_swa.pth")
    monitor.update()
    assert said[2:] == ["[resize/fold0] epoch   1 (half a li\u00b5ne)",
                        "[resize/fold0] $ /venv/python -m engine.fold_job /r/jobs/resize-fold0 swa"]
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
    round1 = [(cfg, label) for s, cfg, label, _ in calls if s == "train"][2:]
    assert [label for _, label in round1] == ["resize/fold0", "resize/fold1"]
    for (cfg, _), fold in zip(round1, ("fold0", "fold1")):
        assert cfg.pseudo.pseudo_labels == str(run / "pseudo" / f"{fold}-labels.npz")
        assert cfg.run.log_dir == str(run / "round1" / "resize" / fold)
        assert cfg.pseudo.pseudo_fraction == 0.5
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
    round1 = [cfg for s, cfg, _, _ in calls if s == "train"][2:]
    assert all(cfg.pseudo.pseudo_labels == str(run / "pseudo-labels.npz") for cfg in round1)


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
    assert ("mosaics", "mosaics") in scripts(calls) and (run / "mosaics" / "mosaics.csv").is_file()
    assert f"[folds] wrote {run / 'folds.csv'}" in out
    cfg = next(c for s, c, _, _ in calls if s == "train")
    assert cfg.data.folds_file == str(run / "folds.csv")
    search = next(a for s, a, label, _ in calls if label == "search")
    assert search.mosaics == str(run / "mosaics" / "mosaics.csv")
    # grouped by the mosaic folds the models were trained on: a fold's tiles and its mosaics' masks are unknown
    assert search.oof_folds == ("fold0", "fold1") and search.folds_file == str(run / "folds.csv")
    submit = next(a for s, a, label, _ in calls if label == "test")
    assert submit.mosaics == str(run / "mosaics" / "mosaics.csv")
    assert submit.post_source.startswith(str(run / "postprocess.json"))
    # a rerun reuses the mosaics built for this data, and the folds
    calls.clear()
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "mosaics.csv exists for this data, reused" in out and ("mosaics", "mosaics") not in scripts(calls)
    # a damaged record of what the mosaics were made from: they are made again, no traceback
    for damage in (b"{not json", b"[1, 2]", b"\xff\xfe\x00", b'{"inputs": 3}'):
        (run / "mosaics" / "source.json").write_bytes(damage)
        calls.clear()
        assert ensemble_cli.main(argv) == 0
        captured = capsys.readouterr()
        assert captured.err == "" and ("mosaics", "mosaics") in scripts(calls)
        assert "train" not in [s for s, _ in scripts(calls)]


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


def _write_mosaics(path: Path, ids, width: int) -> None:
    """A hand-made layout: ``ids`` in rows of ``width`` tiles, mosaic k holding ids[k*2*width:(k+1)*2*width]."""
    n = np.arange(len(ids))
    pd.DataFrame({"id": ids, "mosaic": n // (2 * width), "row": n % (2 * width) // width,
                  "col": n % width}).to_csv(path, index=False)


def test_a_given_mosaics_csv_is_used_as_it_is_and_its_contents_decide_reuse(tiny_data, tmp_path, calls, capsys):
    run, given = tmp_path / "given", tmp_path / "layout" / "mosaics.csv"
    given.parent.mkdir()
    train_ids = kaggle.load_train(tiny_data).ids
    _write_mosaics(given, train_ids[:24], 3)  # 4 mosaics of 6 train tiles (2 rows of 3)
    argv = command(tiny_data, run, "--mosaics", str(given), "--mosaic-folds")
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"[mosaics] {given}: 24 tiles in 4 mosaics, used as given" in out
    assert "mosaics" not in [s for s, _ in scripts(calls)] and not (run / "mosaics").exists()  # nothing built
    search = next(a for s, a, label, _ in calls if label == "search")
    submit = next(a for s, a, label, _ in calls if label == "test")
    assert search.mosaics == submit.mosaics == str(given)
    # the mosaic folds are made from the given layout: each of its mosaics lies in one fold
    fold_of = pd.read_csv(run / "folds.csv", dtype=str).set_index("id")["fold"]
    for k in range(4):
        assert fold_of[train_ids[6 * k:6 * k + 6]].nunique() == 1
    # a rerun with the same contents reuses the folds and every output
    calls.clear()
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "was made from these mosaics, reused" in out
    assert [s for s, _ in scripts(calls)] == []
    # other contents under the same name: the mosaic folds are made again from them, and the folds trained on the
    # earlier ones are refused (one line), as for any folds file rewritten under its name
    _write_mosaics(given, train_ids[:24], 2)  # now 6 mosaics of 4 tiles
    calls.clear()
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other folds than" in err and "--overwrite" in err, err
    fold_of = pd.read_csv(run / "folds.csv", dtype=str).set_index("id")["fold"]
    assert all(fold_of[train_ids[4 * k:4 * k + 4]].nunique() == 1 for k in range(6))
    assert "train" not in [s for s, _ in scripts(calls)]


def test_outputs_made_from_a_given_mosaics_csv_are_remade_when_its_contents_change(tiny_data, tmp_path, calls,
                                                                                    capsys):
    run, given = tmp_path / "given", tmp_path / "mosaics.csv"
    test_ids = kaggle.read_sample_submission(tiny_data / "sample_submission.csv")
    train_ids = kaggle.load_train(tiny_data).ids
    _write_mosaics(given, np.concatenate([train_ids[:4], test_ids[:4]]), 2)
    argv = command(tiny_data, run, "--mosaics", str(given))
    assert ensemble_cli.main(argv) == 0
    calls.clear()
    assert ensemble_cli.main(argv) == 0  # the same contents: nothing is made again
    assert scripts(calls) == []
    _write_mosaics(given, np.concatenate([test_ids[:4], train_ids[:4]]), 2)  # other neighbours, the same name
    capsys.readouterr()
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    made = [label for _, label in scripts(calls)]
    assert "search" in made and "test" in made, made  # the search and the submission, made again
    assert "train" not in [s for s, _ in scripts(calls)] and out.count("exists, skipped") == 2  # the folds reused


@pytest.mark.parametrize("make,fragment", [
    (lambda d: None, "does not exist (python mosaic.py"),
    (lambda d: d.mkdir(), "is a folder, not a mosaics.csv"),
    (lambda d: d.write_text(""), ": not a readable CSV"),
    (lambda d: d.write_text("id,fold\nabc,0\n"), "id,mosaic,row,col"),
    (lambda d: d.write_text("id,mosaic,row,col\nnot-an-id,0,0,0\n"), "not-an-id"),
])
def test_a_bad_mosaics_csv_is_refused_with_one_line_before_anything_runs(tiny_data, tmp_path, calls, capsys, make,
                                                                        fragment):
    given = tmp_path / "m.csv"
    make(given)
    assert ensemble_cli.main(command(tiny_data, tmp_path / "r", "--mosaics", str(given))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--mosaics {given}" in err and fragment in err, err
    assert calls == []


def test_an_empty_mosaics_path_is_refused(tiny_data, tmp_path, calls, capsys):
    assert ensemble_cli.main(command(tiny_data, tmp_path / "r", "--mosaics", "")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mosaics: an empty path" in err, err


# -- reuse decided by what an output was made from, not by its path ---------------------------------------------------
@pytest.fixture
def own_data(tiny_data, tmp_path):
    """A copy of the tiny data set that a test may rewrite."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root, ignore=shutil.ignore_patterns(".cache"))
    return root


def _write_folds(path: Path, ids, shift: int) -> None:
    pd.DataFrame({"id": ids, "fold": (np.arange(len(ids)) + shift) % 2}).to_csv(path, index=False)


def test_a_folds_file_rewritten_under_its_name_is_noticed(own_data, tmp_path, calls, capsys):
    from cli import train as train_cli

    run, folds_csv = tmp_path / "ff", tmp_path / "folds.csv"
    ids = kaggle.load_train(own_data).ids
    _write_folds(folds_csv, ids, 0)
    argv = command(own_data, run, "--folds-file", str(folds_csv))
    assert ensemble_cli.main(argv) == 0
    capsys.readouterr()
    _write_folds(folds_csv, ids, 1)  # fold0 now validates on the images its models trained on
    calls.clear()
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resize/fold0" in err and f"other folds than {folds_csv} now holds" in err, err
    assert calls == []
    # train.py --resume notices too: the checkpoint records the folds file's digest
    last = run / "resize" / "fold0" / "checkpoints" / "last-checkpoint-fold0.pth"
    fold0 = ["--data-dir", str(own_data), "--data-fold", "fold0", "--log-dir", str(run / "resize" / "fold0"),
             "--folds-file", str(folds_csv), *TINY, "--max-epochs", "1", "--resume", str(last)]
    assert train_cli.main(fold0) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trained on other folds than --folds-file" in err, err
    # --overwrite trains the folds afresh on the folds the file holds now
    assert ensemble_cli.main([*argv[:argv.index("--")], "--overwrite", *argv[argv.index("--"):]]) == 0
    assert [label for s, _, label, _ in calls if s == "train"] == ["resize/fold0", "resize/fold1"]


def test_new_test_images_under_the_same_ids_remake_the_mosaics_and_the_submission(own_data, tmp_path, calls,
                                                                                     capsys):
    from datasets.synthetic import write_dataset

    run = tmp_path / "tst"
    argv = command(own_data, run, "--mosaics")
    assert ensemble_cli.main(argv) == 0
    before = P.load(run / "ensemble-probabilities.npz").probs
    other = tmp_path / "other"
    write_dataset(other, n_train=4, n_test=8, seed=9)
    test_ids = kaggle.load_test(own_data).ids
    for new, old in zip(sorted((other / "test" / "images").iterdir()), test_ids):
        (own_data / "test" / "images" / f"{old}.png").write_bytes(new.read_bytes())
    calls.clear()
    capsys.readouterr()
    assert ensemble_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert ("mosaics", "mosaics") in scripts(calls) and ("predict", "test") in scripts(calls)
    assert "train" not in [s for s, _ in scripts(calls)] and out.count("exists, skipped") == 2  # same train set
    assert not np.array_equal(P.load(run / "ensemble-probabilities.npz").probs, before)


def test_mosaic_folds_are_remade_for_other_data_and_overwrite_retrains(own_data, tmp_path, calls, capsys):
    import shutil

    from datasets.synthetic import write_dataset

    run = tmp_path / "mf"
    argv = command(own_data, run, "--mosaics", "--mosaic-folds")
    assert ensemble_cli.main(argv) == 0
    for part in ("train", "test"):
        shutil.rmtree(own_data / part)
    write_dataset(own_data, n_train=40, n_test=8, seed=6)  # other ids, other images
    capsys.readouterr()
    calls.clear()
    assert ensemble_cli.main(argv) == 2  # the folds were trained on other data: refused, one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made from other data" in err and "--overwrite" in err, err
    assert calls[0][0] == "mosaics" and "train" not in [s for s, _ in scripts(calls)]
    new_ids = kaggle.load_train(own_data).ids
    assert sorted(pd.read_csv(run / "folds.csv", dtype=str)["id"]) == sorted(new_ids)  # made again
    assert ensemble_cli.main([*argv[:argv.index("--")], "--overwrite", *argv[argv.index("--"):]]) == 0
    assert [label for s, _, label, _ in calls if s == "train"] == ["resize/fold0", "resize/fold1"]


def test_ensemble_labels_are_remade_after_no_tta_and_other_swa_options(tiny_data, tmp_path, calls, capsys):
    run = tmp_path / "lab"
    argv = command(tiny_data, run, "--pseudo-rounds", "1", "--pseudo-source", "ensemble", "--pseudo-confidence", "0",
                   "--default-post")  # the labels' post-processing stays the defaults: only the predictions change
    cut = argv.index("--")
    assert ensemble_cli.main(argv) == 0
    labels = run / "pseudo-labels.npz"
    first = labels.read_bytes()
    capsys.readouterr()
    assert ensemble_cli.main([*argv[:cut], "--no-tta", *argv[cut:]]) == 2  # round 1 trained on the old labels
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "round1/resize/fold0_swa.pth cannot be reused" in err and "pseudo-labels" in err
    second = labels.read_bytes()
    assert second != first  # made again from the predictions without TTA
    calls.clear()
    assert ensemble_cli.main([*argv[:cut], "--no-tta", "--swa-args", "--batch-size 3", "--overwrite",
                              *argv[cut:]]) == 0
    out = capsys.readouterr().out
    assert out.count("is made again from the fold's models: other SWA options") == 2  # round 0's, not retrained
    swas = [opts for s, opts, label, _ in calls if s == "swa"]
    assert [o.batch_size for o in swas] == [3, 3, 3, 3]
    assert labels.read_bytes() not in (first, second)


# -- refused before any work ----------------------------------------------------------------------------------------
def test_overlapping_folds_are_refused_before_any_work(tiny_data, tmp_path, calls, capsys):
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "r"), "--folds", "fold01,fold1", "--dry-run",
            "--", *TINY, "--max-epochs", "1"]
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: ensemble.py: argument --folds: fold01 and fold1 overlap: both validate on fold 1 " \
                           "(each image must be out of fold once)\n"
    assert captured.out == "" and calls == [] and not (tmp_path / "r").exists()


def test_pseudo_rounds_are_bounded(tiny_data, tmp_path, capsys):
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "r"), "--pseudo-rounds", "21", "--dry-run",
            "--", *TINY]
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "--pseudo-rounds: must be <= 20, got 21" in captured.err
    assert captured.out == ""
