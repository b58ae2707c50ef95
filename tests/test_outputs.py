"""An output never replaces an input: every output flag of every script, given a dataset's file or a path inside its
train/ or test/ folder (directly, through a symlink to the data folder, or to one of its folders), or one of the
step's inputs, is refused with one line before any work, and the dataset is left as it was. One shared check
(tgs.io.check_output) does it; the walk over the scripts' flags below fails when a new output flag is not covered."""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from tests.tiny import TINY
from tgs.io import check_output, dataset_entry

ROOT = Path(__file__).resolve().parents[1]

SCRIPTS = ("tgs.submission", "cli.score", "cli.report", "cli.mosaic", "cli.pseudo", "datasets.folds", "cli.swa",
           "cli.test", "cli.train", "cli.ensemble", "datasets.synthetic", "datasets.prepare")
# flag names that say "a path written": a new output flag of any script matches this and must be in OUTPUTS
OUTPUT_LIKE = re.compile(r"^--(out|output.*|save.*|per-image|log-dir|run-dir|.*-prefix|write.*|dump.*|export.*)$")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from datasets.synthetic import write_dataset

    root = tmp_path_factory.mktemp("outdata") / "data"
    write_dataset(root, n_train=12, n_test=4, seed=3)
    return root


@pytest.fixture()
def link(data, tmp_path):
    """A symlink to the data folder: the outputs are given through it, the inputs by the folder's own path."""
    target = tmp_path / "L"
    target.symlink_to(data, target_is_directory=True)
    return target


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` (but the decoded-image cache) with the sha256 of each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(folder.rglob("*")) if ".cache" not in p.parts}


def refused(module: str, argv, fragment: str) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = importlib.import_module(module).main([str(a) for a in argv])
    text = err.getvalue()
    assert code == 2 and text.startswith("error: ") and text.count("\n") == 1 and fragment in text, (code, text)
    return text


class _Parsed(Exception):
    """Raised in place of parsing: carries the parser a script built."""


def parser_flags(module: str) -> set[str]:
    """The option strings of the parser a script's ``main`` builds (caught as it starts parsing)."""
    def grab(self, *args, **kwargs):
        raise _Parsed(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", grab), pytest.raises(_Parsed) as caught:
        importlib.import_module(module).main([])
    return {s for action in caught.value.args[0]._actions for s in action.option_strings}


def _dummy(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"x")
    return path


# (script, flag): the argv that gives TARGET to the flag (M: a dummy input file, D: the path to the data folder)
OUTPUTS = {
    ("tgs.submission", "--out"): lambda d, m, t: ["--empty", "--ids", d / "sample_submission.csv", "--out", t],
    ("cli.score", "--per-image"): lambda d, m, t: [m, "--truth", d / "train.csv", "--per-image", t],
    ("cli.score", "--save-best"): lambda d, m, t: ["--search", m, "--truth", d / "train.csv", "--save-best", t],
    ("cli.report", "--out"): lambda d, m, t: ["--probabilities", m, "--truth", d / "train.csv", "--out", t],
    ("cli.mosaic", "--out"): lambda d, m, t: ["--data-dir", d, "--out", t],
    ("cli.pseudo", "--out"): lambda d, m, t: ["--probabilities", m, "--data-dir", d, "--out", t],
    ("datasets.folds", "--out"): lambda d, m, t: ["--data-dir", d, "--out", t],
    ("cli.swa", "--output"): lambda d, m, t: ["--input", m, "--output", t, "--data-dir", d],
    ("cli.test", "--output-prefix"): lambda d, m, t: [m, "--data-dir", d, "--output-prefix", t],
    ("cli.ensemble", "--run-dir"): lambda d, m, t: ["--data-dir", d, "--run-dir", t, "--dry-run"],
    ("datasets.synthetic", "--out"): lambda d, m, t: ["--out", t, "--train", 2, "--test", 1],
    ("datasets.prepare", "--out"): lambda d, m, t: [m, "--out", t],
    ("cli.train", "--log-dir"): None,  # a subprocess: tested below
}


def test_every_output_flag_of_every_script_is_covered():
    found = {(module, flag) for module in SCRIPTS for flag in parser_flags(module) if OUTPUT_LIKE.match(flag)}
    assert found == set(OUTPUTS)


WHERE = ("train.csv", "depths.csv", "sample_submission.csv", "train/masks/x", "test/images/x", "train")
CASES = [(*key, where) for key, argv in OUTPUTS.items() if argv is not None for where in WHERE
         if key[1] != "--output-prefix" or "/" in where]  # a prefix PREFIX writes PREFIX-submission.csv ...


@pytest.mark.parametrize("script,flag,where", CASES)
def test_no_output_flag_writes_into_the_dataset_through_a_symlink(data, link, tmp_path, script, flag, where):
    before = snapshot(data)
    model = _dummy(tmp_path, "m.pth")
    err = refused(script, OUTPUTS[script, flag](data, model, link / where), f"{flag} {link / where}")
    assert " would overwrite " in err
    assert f"the dataset's {where.split('/')[0]} in" in err or "the input --" in err  # an input too: named first
    assert snapshot(data) == before


def test_the_issue_cases_directly(data, tmp_path):
    """The cases the issue names, without a symlink: each wrote over the dataset with exit 0 before."""
    before = snapshot(data)
    model = _dummy(tmp_path, "m.pth")
    refused("tgs.submission", ["--empty", "--ids", data / "train.csv", "--out", data / "train.csv"],
            "would overwrite the input --ids")
    refused("tgs.submission", ["--masks", data / "train" / "masks", "--out", data / "sample_submission.csv"],
            "would overwrite the dataset's sample_submission.csv")
    sub = _dummy(tmp_path, "s.csv")
    refused("cli.score", ["--search", model, "--truth", data / "train.csv", "--save-best",
                          data / "sample_submission.csv"], "would overwrite the dataset's sample_submission.csv")
    refused("cli.score", [sub, "--truth", data / "train.csv", "--per-image", data / "depths.csv"],
            "would overwrite the dataset's depths.csv")
    refused("cli.score", ["--search", model, "--truth", data / "train.csv", "--save-best",
                          data / "train" / "masks" / "x.png"], "would overwrite the dataset's train")
    refused("cli.report", ["--probabilities", model, "--truth", data / "train.csv", "--out", data / "train" / "masks"],
            "would overwrite the dataset's train")
    refused("cli.mosaic", ["--data-dir", data, "--out", data / "train" / "masks" / "x"],
            "would overwrite the dataset's train")
    assert snapshot(data) == before


def test_a_symlink_to_a_dataset_folder_or_file_and_dotdot_are_seen_through(data, tmp_path):
    masks = tmp_path / "masks"
    masks.symlink_to(data / "train" / "masks", target_is_directory=True)
    truth = tmp_path / "truth.csv"
    truth.symlink_to(data / "train.csv")
    assert dataset_entry(masks / "a.png") == (data, "train")
    assert dataset_entry(truth) == (data, "train.csv")
    assert dataset_entry(data / "train" / ".." / "depths.csv") == (data, "depths.csv")
    assert dataset_entry(data / "folds.csv") is None  # beside the dataset's files: not one of them
    assert dataset_entry(data / "test-submission.csv") is None
    assert dataset_entry(tmp_path / "elsewhere" / "train.csv") is None  # no dataset there


def test_an_entry_that_is_itself_a_symlink_is_protected_by_data_dir(tmp_path):
    store = tmp_path / "disk" / "train"
    (store / "images").mkdir(parents=True)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(store, target_is_directory=True)
    with pytest.raises(Exception, match="would overwrite the dataset's train"):
        check_output(store / "masks" / "x.png", "--out", data_dirs=[data])


def test_an_output_given_as_a_symlink_or_hard_link_to_an_input_is_refused(tmp_path):
    src = _dummy(tmp_path, "oof.npz")
    (tmp_path / "soft.npz").symlink_to(src)
    os.link(src, tmp_path / "hard.npz")
    for out in ("soft.npz", "hard.npz"):
        with pytest.raises(Exception, match="would overwrite the input --probabilities"):
            check_output(tmp_path / out, "--out", {"--probabilities": src})
    check_output(tmp_path / "new.npz", "--out", {"--probabilities": src})  # another file: fine


def test_prepare_never_replaces_a_folder_that_holds_its_source(tmp_path):
    src = tmp_path / "download"
    src.mkdir()
    (src / "train.zip").write_bytes(b"x")
    refused("datasets.prepare", [src / "train.zip", "--out", src, "--force"],
            f"--out {src} would remove the input SOURCE {src / 'train.zip'}, which lies inside it")
    assert (src / "train.zip").read_bytes() == b"x"


def _train(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def _one_line(r: subprocess.CompletedProcess, fragment: str) -> None:
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and fragment in r.stderr, (r.returncode, r.stderr[-2000:])


def test_train_log_dir_in_the_dataset_and_overwrite_of_an_input_are_refused(data, link, tmp_path):
    from tgs import TILE, pseudo

    before = snapshot(data)
    _one_line(_train("--data-dir", link, "--log-dir", link / "train" / "masks" / "run", *TINY, "--max-epochs", "1"),
              "--log-dir")
    run = tmp_path / "run"
    labels = run / "models" / "labels.npz"  # an input inside the run folder that --overwrite would empty
    labels.parent.mkdir(parents=True)
    ids = np.loadtxt(data / "sample_submission.csv", str, delimiter=",", skiprows=1, usecols=0)[:2]
    pseudo.save(labels, pseudo.PseudoLabels(ids, np.zeros((len(ids), TILE, TILE), bool),
                                            np.ones(len(ids), np.float32)))
    kept = labels.read_bytes()
    r = _train("--data-dir", data, "--log-dir", run, "--pseudo-labels", labels, "--overwrite", *TINY,
               "--max-epochs", "1")
    _one_line(r, f"--overwrite would remove the input --pseudo-labels {labels}, which lies in --log-dir {run}")
    assert labels.read_bytes() == kept
    assert snapshot(data) == before
