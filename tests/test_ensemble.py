"""ensemble.py: one command from training to the ensemble submission; finished folds are skipped, interrupted ones
resume, folds made from other data or options are refused (or retrained with --overwrite); a failing step stops
everything with one line; pass-through options are checked before anything runs.

The scripts run in-process here (ensemble.RUNNER replaced) to keep the tests fast; one test runs the real
subprocess runner.
"""
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import importlib

import models
from cli import ensemble as ensemble_cli
from engine import ensemble
from datasets import folds, kaggle
from tgs import postprocess
from tgs import probabilities as P

TINY = ["--basenet", "unet", "--encoder-width", "4", "--decoder-channels", "8", "--center-channels", "16",
        "--input-upsample", "1", "--oc", "center", "--batch-size", "8", "--dataload-workers-nums", "0",
        "--device", "cpu", "--warmup-epochs", "1", "--threads", "1"]


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

    def inprocess(script, argv, label, log, env=None, procs=None):
        record.append((script, list(argv), label, env))
        code = importlib.import_module(f"cli.{script}").main(list(argv))
        if code:
            raise ensemble.StepFailed(f"{script}.py failed for {label} (exit {code})")

    monkeypatch.setattr(ensemble, "RUNNER", inprocess)
    return record


def command(data, run, *extra, epochs=1):
    return ["--data-dir", str(data), "--run-dir", str(run), "--folds", "fold0,fold1", "--modes", "resize",
            "--resize-size", "32", *extra, "--", *TINY, "--max-epochs", str(epochs)]


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
    assert info["searched_on"] == str(run / "oof-probabilities.npz") and info["score"] >= info["default_score"]
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
    run = tmp_path / "bad"
    argv = command(tiny_data, run)
    argv[argv.index("unet")] = "resnet1888"  # train.py refuses it (real subprocess runner)
    assert ensemble_cli.main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "train.py failed for resize/fold0 (exit 2)" in err and "resnet1888" in err
    assert str(run / "logs" / "resize-fold0.log") in err
    assert "resnet1888" in (run / "logs" / "resize-fold0.log").read_text()
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
])
def test_bad_options_are_refused_before_anything_runs(tiny_data, tmp_path, calls, capsys, extra, passthrough,
                                                      fragment):
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "r"), *extra, "--", *TINY, *passthrough]
    assert ensemble_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert calls == [] and not (tmp_path / "r").exists()


def test_folds_run_in_parallel_one_process_per_gpu(tiny_data, tmp_path, monkeypatch, capsys):
    record, lock = [], threading.Lock()
    running, peak = set(), []
    barrier = threading.Barrier(2, timeout=10)

    def fake(script, argv, label, log, env=None, procs=None):
        with lock:
            record.append((script, label, (env or {}).get("CUDA_VISIBLE_DEVICES"), list(argv)))
            running.add(label)
            peak.append(len(running))
        if script == "train" and label.endswith("fold0"):
            barrier.wait()  # the first two folds must be running at the same time
        if script == "swa":
            out = argv[argv.index("--output") + 1]
            os.makedirs(os.path.dirname(out), exist_ok=True)
            open(out, "wb").close()
        with lock:
            running.discard(label)

    monkeypatch.setattr(ensemble, "RUNNER", fake)
    argv = ["--data-dir", str(tiny_data), "--run-dir", str(tmp_path / "p"), "--folds", "fold0,fold1",
            "--modes", "pad,resize", "--gpus", "3,5", "--", "--basenet", "unet"]
    assert ensemble_cli.main(argv) == 0
    assert "running 2 folds at a time: GPU 3, GPU 5" in capsys.readouterr().out
    fold_steps = [r for r in record if r[0] in ("train", "swa")]
    assert sorted(r[1] for r in fold_steps if r[0] == "train") == ["pad/fold0", "pad/fold1", "resize/fold0",
                                                                   "resize/fold1"]
    for label in ("pad/fold0", "pad/fold1", "resize/fold0", "resize/fold1"):
        gpus = {r[2] for r in fold_steps if r[1] == label}
        assert len(gpus) == 1 and gpus <= {"3", "5"}  # train and swa of a fold on the same GPU
        train = next(r[3] for r in fold_steps if r[1] == label and r[0] == "train")
        assert train[train.index("--device") + 1] == "cuda"
    assert max(peak) == 2
    assert all(r[2] is None for r in record if r[0] not in ("train", "swa"))  # ensemble steps: every GPU visible

    def failing(script, argv, label, log, env=None, procs=None):
        if label == "pad/fold0" and script == "train":
            raise ensemble.StepFailed("train.py failed for pad/fold0 (exit 1): boom")
        fake(script, argv, label, log, env, procs)

    record.clear()
    barrier = threading.Barrier(1)
    monkeypatch.setattr(ensemble, "RUNNER", failing)
    argv[argv.index("--run-dir") + 1] = str(tmp_path / "q")
    assert ensemble_cli.main(argv) == 2
    assert "pad/fold0 (exit 1): boom" in capsys.readouterr().err
    assert not any(r[0] in ("test", "score") for r in record)  # nothing after a failure


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
    lines = [s for s in out.splitlines() if s.strip() and not s.startswith("running ")]
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
    training unattended), ensemble.py exits 130, and each fold keeps its last checkpoint to resume from."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "term"
    cut = TINY.index("--threads")
    argv = [sys.executable, str(ensemble.ROOT / "ensemble.py"), "--data-dir", str(tiny_data), "--run-dir", str(run),
            "--folds", "fold0,fold1", "--modes", "resize", "--resize-size", "32", "--parallel", "2", "--",
            *TINY[:cut], *TINY[cut + 2:], "--max-epochs", "500"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ensemble.ROOT)
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
    assert proc.returncode == 130 and "interrupted" in err
    assert "stopping resize/fold0" in out and "stopping resize/fold1" in out
    assert not _processes_mentioning(str(run))  # no orphan keeps training
    for fold, c in zip(("fold0", "fold1"), checkpoints):
        assert models.read_checkpoint(c)["meta"]["fold"] == fold  # a good checkpoint to resume from
    assert not list(run.rglob("*_swa.pth"))
