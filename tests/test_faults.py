"""Faults injected at chosen moments: a full disk (a file-size limit in a subprocess), a kill between the files of a
pair, diverged weights, stale temporary files. The promises: one line and exit 2, nothing half-written under a
final name, the last complete checkpoint and outputs intact."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from cli import swa as swa_cli
from cli import test as test_cli
from tests.tiny import TINY, TINY_MODEL
from tgs.errors import UserError
from tgs.inputs import InputSpec
from tgs.io import atomic_paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(tiny_data):
    return tiny_data


def limited(limit_bytes: int):
    """preexec_fn: writes past ``limit_bytes`` fail with EFBIG (SIGXFSZ ignored), like a disk that is full."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def script(name: str, *argv, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"{name}.py"), *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
                          preexec_fn=limited(limit) if limit else None)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_full_disk_in_train_keeps_the_last_complete_checkpoint(data, tmp_path):
    log = tmp_path / "run"
    assert script("train", "--data-dir", data, "--log-dir", log, *TINY, "--max-epochs", "1").returncode == 0
    last = log / "checkpoints" / "last-checkpoint-fold0.pth"
    size = last.stat().st_size
    r = script("train", "--data-dir", data, "--log-dir", log, *TINY, "--max-epochs", "2", "--resume", last,
               limit=size // 2)
    err = one_line(r)
    assert f"cannot write {last}: the disk is full or a size limit was reached" in err
    assert "its previous version is intact" in err
    assert models.read_checkpoint(last)["meta"]["epoch"] == 0  # the epoch before, complete
    assert not list(log.rglob(".*.tmp"))


def _model(path: Path, spec=InputSpec("resize", 32), poison: bool = False) -> Path:
    torch.manual_seed(0)
    model = models.build_model(encoder="unet", encoder_width=4, decoder_channels=8, center_channels=16,
                               input_upsample=1, oc_decoder=False, fuse_channels=8, image_channels=8)
    if poison:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    return models.save_checkpoint(path, model, spec, {"config": {"data_fold": "fold0"}})


def test_full_disk_in_swa_and_test_is_one_line_and_keeps_the_old_outputs(data, tmp_path):
    src = _model(tmp_path / "m.pth")
    out = tmp_path / "swa.pth"
    err = one_line(script("swa", "--input", src, "--output", out, "--data-dir", data, "--device", "cpu",
                          limit=100_000))
    assert f"cannot write {out}: the disk is full" in err and not out.exists()
    prefix = tmp_path / "sub"
    assert script("test", src, "--data-dir", data, "--output-prefix", prefix, "--device", "cpu").returncode == 0
    csv, npz = Path(f"{prefix}-submission.csv"), Path(f"{prefix}-probabilities.npz")
    before = (csv.read_bytes(), npz.read_bytes())
    err = one_line(script("test", src, "--data-dir", data, "--output-prefix", prefix, "--device", "cpu",
                          "--threshold", "0.3", limit=300))
    assert "the disk is full or a size limit was reached" in err and "previous version is intact" in err
    assert (csv.read_bytes(), npz.read_bytes()) == before  # the old pair, untouched
    assert not list(tmp_path.glob(".*.tmp"))


class Killed(BaseException):
    pass


def test_a_kill_while_committing_a_pair_never_leaves_a_new_file_beside_an_old_one(tmp_path, monkeypatch):
    a, b = tmp_path / "x-probabilities.npz", tmp_path / "x-submission.csv"
    a.write_text("old a")
    b.write_text("old b")
    real, calls = os.replace, {"n": 0}

    def replace_then_die(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Killed()
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        with atomic_paths(a, b) as (ta, tb):
            ta.write_text("new a")
            tb.write_text("new b")
    assert a.read_text() == "new a" and not b.exists()  # the old CSV is gone, not left beside the new .npz


def test_test_py_says_what_it_overwrites_and_removes_its_stale_temporaries(data, tmp_path, capsys):
    src = _model(tmp_path / "m.pth")
    prefix = tmp_path / "o"
    stale = tmp_path / ".o-submission.csv.dead1234.tmp"
    stale.write_text("left by a killed run")
    argv = [str(src), "--data-dir", str(data), "--output-prefix", str(prefix), "--device", "cpu"]
    assert test_cli.main(argv) == 0
    assert "overwriting" not in capsys.readouterr().out and not stale.exists()
    assert test_cli.main(argv) == 0
    assert f"overwriting {prefix}-probabilities.npz and {prefix}-submission.csv" in capsys.readouterr().out


def test_diverged_models_are_refused_by_swa_and_test(data, tmp_path, capsys):
    bad = _model(tmp_path / "nan.pth", poison=True)
    assert swa_cli.main(["--input", str(bad), "--output", str(tmp_path / "s.pth"), "--data-dir", str(data),
                         "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not finite" in err and not (tmp_path / "s.pth").exists()
    assert test_cli.main([str(bad), "--data-dir", str(data), "--output-prefix", str(tmp_path / "t"),
                          "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights are not finite" in err and str(bad) in err
    assert not list(tmp_path.glob("t-*"))


def test_non_finite_predictions_are_refused(data, tmp_path, monkeypatch, capsys):
    from engine import predict

    good = _model(tmp_path / "m.pth")
    real = predict.forward

    def nan_forward(*args, **kwargs):
        out = real(*args, **kwargs)
        out.probs[:] = float("nan")
        return out

    monkeypatch.setattr(predict, "forward", nan_forward)
    assert test_cli.main([str(good), "--data-dir", str(data), "--output-prefix", str(tmp_path / "t"),
                          "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite probabilities" in err
    assert not list(tmp_path.glob("t-*"))


def test_a_full_disk_message_names_the_file_and_what_is_left(tmp_path, monkeypatch):
    """The translation itself, for the OSError of a full filesystem (ENOSPC) as well as a size limit."""
    import errno

    from tgs.io import atomic_open

    target = tmp_path / "f.csv"
    target.write_text("old")

    class Full:
        def write(self, *_):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(UserError, match=rf"cannot write {target}: the disk is full .*No space left on device.*"
                                        "previous version is intact"):
        with atomic_open(target, "w") as fh:
            fh.write("x")
            Full().write()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]


HOLDER = ("import sys; from tgs.io import FolderLock; lock = FolderLock(sys.argv[1], 'x'); print('held', flush=True); "
          "sys.stdin.read()")


@pytest.fixture
def hold(tmp_path):
    """hold(folder): another real process holds ``folder``'s lock until the test ends (its stdin closes)."""
    procs = []

    def start(folder: Path) -> int:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p.pid

    yield start
    for p in procs:
        p.communicate("", timeout=60)


def test_a_folder_lock_is_exclusive_between_processes_and_freed_by_a_kill(tmp_path, hold):
    from tgs.io import FolderLock

    pid = hold(tmp_path / "a")
    with pytest.raises(UserError, match=rf"^--log-dir {tmp_path / 'a'} is in use by another process \(pid {pid}\)"):
        FolderLock(tmp_path / "a", "--log-dir")
    with FolderLock(tmp_path / "b", "--log-dir"):  # another folder is free, and so is one whose holder was killed
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "c")], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(UserError):
            FolderLock(tmp_path / "c", "--log-dir")
        p.kill()
        p.wait()
        FolderLock(tmp_path / "c", "--log-dir").release()


def test_a_second_train_or_ensemble_in_a_busy_folder_is_refused_before_any_work(data, tmp_path, hold):
    log = tmp_path / "run"
    pid = hold(log)
    err = one_line(script("train", "--data-dir", data, "--log-dir", log, *TINY, "--max-epochs", "1"))
    assert f"--log-dir {log} is in use by another process (pid {pid})" in err
    assert sorted(p.name for p in log.iterdir()) == [".lock"]  # nothing written beside the other process
    run = tmp_path / "ens"
    pid = hold(run)
    err = one_line(script("ensemble", "--data-dir", data, "--run-dir", run, "--folds", "fold0", "--modes", "resize",
                          "--resize-size", "32", "--", *TINY_MODEL, "--max-epochs", "1"))
    assert f"--run-dir {run} is in use by another process (pid {pid})" in err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


# -- an output never replaces an input, and a path of the wrong kind is one line --------------------------------------
def _main(name):
    import importlib

    return importlib.import_module(name).main


def refused(capsys, module, argv, fragment):
    code = _main(module)([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and fragment in err, (code, err)
    return err


def test_outputs_that_would_replace_an_input_or_the_dataset_are_refused(data, tmp_path, capsys):
    model = _model(tmp_path / "m.pth")
    before = {p: p.read_bytes() for p in (model, data / "train.csv")}
    refused(capsys, "cli.swa", ["--input", model, "--output", model, "--data-dir", data],
            f"--output {model} would overwrite the input --input {model}")
    refused(capsys, "cli.swa", ["--input", tmp_path, "--output", model, "--data-dir", data],
            f"--output {model} would overwrite a model of the input --input {tmp_path}")  # one of the averaged
    refused(capsys, "cli.swa", ["--input", model, "--output", data / "train.csv", "--data-dir", data],
            f"would overwrite the dataset's train.csv in {data}")
    sub = tmp_path / "s.csv"
    sub.write_text("id,rle_mask\n")
    refused(capsys, "cli.score", [sub, "--truth", data / "train.csv", "--per-image", sub],
            f"--per-image {sub} would overwrite the input SUBMISSION {sub}")
    oof = tmp_path / "oof.npz"
    oof.write_bytes(b"x")
    refused(capsys, "cli.score", ["--search", oof, "--truth", data / "train.csv", "--save-best", oof],
            "--save-best")
    refused(capsys, "cli.pseudo", ["--probabilities", oof, "--data-dir", data, "--out", oof],
            f"--out {oof} would overwrite the input --probabilities {oof}")
    refused(capsys, "datasets.folds", ["--data-dir", data, "--out", data / "train.csv"],
            "would overwrite the dataset's train.csv")
    refused(capsys, "cli.test", [model, "--data-dir", data, "--output-prefix", data / "train" / "x"],
            "would overwrite the dataset's train")
    probs = tmp_path / "p-probabilities.npz"
    probs.write_bytes(b"x")
    refused(capsys, "cli.test", ["--from-probabilities", probs, "--data-dir", data, "--output-prefix", tmp_path / "p"],
            "would overwrite the input --from-probabilities")
    src = tmp_path / "download"
    src.mkdir()
    (src / "train.zip").write_bytes(b"x")
    refused(capsys, "datasets.prepare", [src, "--out", src, "--force"],
            f"--out {src} would overwrite the input SOURCE {src}")
    assert (src / "train.zip").read_bytes() == b"x"
    assert before == {p: p.read_bytes() for p in before}


def test_a_folder_for_a_file_and_a_file_for_a_folder_are_one_line(data, tmp_path, capsys):
    model = _model(tmp_path / "m.pth")
    folder = tmp_path / "dir"
    folder.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    refused(capsys, "cli.swa", ["--input", model, "--output", folder, "--data-dir", data], f"{folder}: it is a folder")
    refused(capsys, "datasets.folds", ["--data-dir", data, "--out", folder], "it is a folder")
    refused(capsys, "tgs.submission", ["--empty", "--ids", data / "sample_submission.csv", "--out", folder],
            "it is a folder")
    refused(capsys, "cli.train", ["--data-dir", data, "--log-dir", a_file, *TINY, "--max-epochs", "1"],
            f"{a_file}: exists and is not a folder")
    refused(capsys, "cli.mosaic", ["--data-dir", data, "--out", a_file / "m"], "is a file, where a folder is expected")
    assert a_file.read_text() == "x"


def test_swa_refuses_to_label_one_folds_models_with_another_fold(data, tmp_path, capsys):
    model = _model(tmp_path / "m.pth")  # fold0's
    refused(capsys, "cli.swa", ["--input", model, "--output", tmp_path / "s.pth", "--data-dir", data,
                                "--data-fold", "fold1", "--device", "cpu"],
            "--data-fold fold1: the models were trained on fold0")


def test_out_of_fold_prediction_refuses_a_model_of_other_data(data, tmp_path, capsys):
    spec = InputSpec("resize", 32)
    torch.manual_seed(0)
    model = models.build_model(encoder="unet", encoder_width=4, decoder_channels=8, center_channels=16,
                               input_upsample=1, oc_decoder=False, fuse_channels=8, image_channels=8)
    path = models.save_checkpoint(tmp_path / "m.pth", model, spec, {"config": {"data_fold": "fold0"},
                                                                    "data_fingerprint": "0" * 16})
    refused(capsys, "cli.test", [path, "--split", "valid", "--data-dir", data, "--output-prefix", tmp_path / "o",
                                 "--device", "cpu"], "was trained on other data than these training images")


@pytest.mark.parametrize("argv,fragment", [
    (["--k", "11"], "--k: must be <= 10, got 11"),
    (["--k", "1"], "--k: must be >= 2, got 1"),
    (["--seed", "-1"], "--seed: must be >= 0, got -1"),
])
def test_folds_options_are_bounded(data, tmp_path, capsys, argv, fragment):
    refused(capsys, "datasets.folds", ["--data-dir", data, "--out", tmp_path / "f.csv", *argv], fragment)
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize("text,fragment", [
    ('{"threshold": 0.5, "threshold": 0.4, "min_area": 0, "gate": null, "flat": true}', "'threshold' is given twice"),
    ('{"treshold": 0.4, "threshold": 0.5, "min_area": 0, "gate": null, "flat": true}',
     "unknown key 'treshold' (did you mean threshold?)"),
    ('{"threshold": 0.5, "min_area": 100000, "gate": null, "flat": true}', "min_area: must be <= 10201, got 100000"),
    ('{"threshold": 0.5, "min_area": 1e23, "gate": null, "flat": true}', "min_area: 1e+23 is not an integer"),
])
def test_bad_post_config_files(data, tmp_path, capsys, text, fragment):
    post = tmp_path / "post.json"
    post.write_text(text)
    refused(capsys, "cli.test", [_model(tmp_path / "m.pth"), "--data-dir", data, "--output-prefix", tmp_path / "o",
                                 "--post-config", post], fragment)
    refused(capsys, "cli.test", [tmp_path / "m.pth", "--data-dir", data, "--output-prefix", tmp_path / "o",
                                 "--min-area", "100000"], "--min-area: must be <= 10201")


def test_ensemble_reads_its_test_args_files_and_folds_file_before_any_fold(data, tmp_path, capsys):
    base = ["--data-dir", data, "--run-dir", tmp_path / "r", "--folds", "fold0", "--modes", "resize",
            "--resize-size", "32"]
    refused(capsys, "cli.ensemble", [*base, "--test-args", f"--post-config {tmp_path / 'no.json'}", "--",
                                     *TINY_MODEL], f"--test-args: --post-config {tmp_path / 'no.json'} does not exist")
    refused(capsys, "cli.ensemble", [*base, "--folds-file", tmp_path / "no.csv", "--", *TINY_MODEL],
            f"--folds-file {tmp_path / 'no.csv'} does not exist")
    assert not (tmp_path / "r").exists()


def test_out_of_fold_prediction_and_reports_refuse_another_split(data, tmp_path, capsys):
    log = tmp_path / "run"
    assert script("train", "--data-dir", data, "--log-dir", log, *TINY, "--max-epochs", "1").returncode == 0
    other = tmp_path / "other.csv"
    assert _main("datasets.folds")(["--data-dir", str(data), "--out", str(other), "--k", "5"]) == 0
    capsys.readouterr()
    model = log / "models" / "last-fold0.pth"
    fragment = "was trained with the folds of the 10 consecutive chunks of train.csv; under another split"
    refused(capsys, "cli.test", [model, "--split", "valid", "--data-dir", data, "--folds-file", other,
                                 "--output-prefix", tmp_path / "o", "--device", "cpu"],
            f"--folds-file {other}: {model} {fragment}")
    refused(capsys, "cli.report", [log, "--source", "model", "--folds-file", other, "--device", "cpu",
                                   "--out", tmp_path / "rep"], fragment)


def test_a_filesystem_without_locks_works_on_with_a_note(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    from tgs.io import FolderLock

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    FolderLock(tmp_path / "nfs", "--log-dir").release()
    assert f"note: --log-dir {tmp_path / 'nfs'}: no lock on this filesystem (No locks available)" in \
        capsys.readouterr().err
