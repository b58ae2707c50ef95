#!/usr/bin/env python
"""Train, average and ensemble every fold in one command: the 9th place's 20-model ensemble.

    python ensemble.py --data-dir DATA --run-dir runs/ens -- --pretrained imagenet --vtf --loss-on-center ...
    python ensemble.py --data-dir DATA --run-dir runs/demo/ens --folds fold0,fold1 --modes resize --resize-size 32 \\
        -- --basenet unet --encoder-width 4 --max-epochs 3 --device cpu

For every mode (pad: reflect-pad 101 -> --pad-size; resize: 101 -> --resize-size) and every fold, one after
another, or --parallel folds at a time: by default one process per GPU when several are visible (each with its
own CUDA_VISIBLE_DEVICES); on the CPU, --parallel N runs N folds at once with the cores shared between them:

1. ``train.py`` into RUN/MODE/FOLD (a subprocess per fold); a fold with a last checkpoint but no SWA model resumes
   from ``checkpoints/last-checkpoint-FOLD.pth``;
2. ``swa.py --input RUN/MODE/FOLD/models --output RUN/MODE/FOLD_swa.pth``; a fold whose SWA model exists is
   finished and skipped on the next run;

then, with all the SWA models:

3. out-of-fold predictions of each fold (its models of every mode averaged, ``test.py --split valid``) in
   RUN/oof/FOLD-probabilities.npz, merged into RUN/oof-probabilities.npz and scored;
4. ``score.py --search`` on them: the best post-processing, saved in RUN/postprocess.json;
5. ``test.py`` with flip TTA over every SWA model and that post-processing (``--default-post``: test.py's
   defaults; flags in --test-args override either): RUN/ensemble-submission.csv (+ probabilities), checked with
   ``score.py --check``.

Arguments after ``--`` (or in --train-args) go to every train.py; the data, fold, log dir, resume, input mode and
size are set here. --device, --threads and --amp given there are used by swa.py and test.py too. Each step's
output is shown prefixed with its fold and kept in RUN/logs/.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tgs.errors import UserError, cli  # noqa: E402

MODES = ("pad", "resize")
ALL_FOLDS = ",".join(f"fold{k}" for k in range(10))
# train.py options that ensemble.py sets itself, and what to use instead
TRAIN_OWNED = {"data_dir": "--data-dir", "data_fold": "--folds", "log_dir": "--run-dir", "resume": "(automatic)",
               "resize": "--modes", "input_size": "--pad-size / --resize-size", "folds_file": "--folds-file"}
TEST_OWNED = ("models", "from_probabilities", "merge_oof", "split", "data_dir", "data_fold", "folds_file",
              "output_prefix", "tta")  # test.py options ensemble.py sets itself
SHARED = ("device", "threads", "amp")  # train.py options swa.py and test.py take as well


class StepFailed(UserError):
    """A subprocess step exited with an error: the message names the step, its last error line and its log."""


@dataclass
class Job:
    mode: str
    fold: str
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.mode}/{self.fold}"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / self.mode / self.fold

    @property
    def swa(self) -> Path:
        return self.run_dir / self.mode / f"{self.fold}_swa.pth"

    @property
    def last_checkpoint(self) -> Path:
        return self.log_dir / "checkpoints" / f"last-checkpoint-{self.fold}.pth"

    @property
    def log(self) -> Path:
        return self.run_dir / "logs" / f"{self.mode}-{self.fold}.log"


# -- command line -------------------------------------------------------------------------------------------------
def load_script(name: str):
    """A root script (train, swa, test, score) as a module (by path: ``test`` is also a stdlib package name)."""
    key = f"_tgs_script_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


def given_options(parser: argparse.ArgumentParser, argv: list[str], what: str) -> dict:
    """The options present in ``argv`` for ``parser`` (abbreviations and --x=y forms understood)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
        if action.dest == "models":
            action.nargs = "*"

    def error(message: str):
        raise UserError(f"{what}: {message}")

    parser.error = error
    return vars(parser.parse_args(argv))


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="dataset in Kaggle's layout (default: data)")
    p.add_argument("--run-dir", default="runs/ensemble",
                   help="where every fold, model and submission goes (default: runs/ensemble)")
    p.add_argument("--folds", default=ALL_FOLDS, help="comma-separated fold names (default: fold0,...,fold9)")
    p.add_argument("--modes", default="pad,resize", help="comma-separated input modes: pad, resize (default: both)")
    p.add_argument("--folds-file", help="CSV id,fold (python -m datasets.folds) instead of the 10 chunks")
    p.add_argument("--pad-size", type=int, default=128, help="pad mode: reflect-pad 101 to this size (default: 128)")
    p.add_argument("--resize-size", type=int, default=128, help="resize mode: resize 101 to this size (default: 128)")
    p.add_argument("--train-args", default="", help="options for every train.py (also: everything after --)")
    p.add_argument("--swa-args", default="", help="extra options for swa.py (e.g. '--batch-size 64')")
    p.add_argument("--test-args", default="",
                   help="extra options for test.py, out-of-fold and test (e.g. '--batch-size 256 --threshold 0.45')")
    p.add_argument("--no-tta", dest="tta", action="store_false", help="no flip TTA in test.py")
    p.add_argument("--default-post", dest="tuned_post", action="store_false",
                   help="submit with test.py's default post-processing instead of the setting the out-of-fold "
                        "search found (RUN/postprocess.json); flags in --test-args (--threshold ..., "
                        "--post-config FILE) override either")
    p.add_argument("--gpus", default="auto",
                   help="GPUs for parallel folds: auto (the visible ones), none, or e.g. 0,1")
    p.add_argument("--parallel", type=int, default=0,
                   help="folds trained at the same time (default: one per GPU with 2+ GPUs, else 1); on the CPU "
                        "each gets cores/N threads unless --threads is given")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    args = p.parse_args(argv)
    args.train_args = shlex.split(args.train_args) + passthrough
    args.swa_args = shlex.split(args.swa_args)
    args.test_args = shlex.split(args.test_args)
    args.fold_list = [f.strip() for f in args.folds.split(",") if f.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.fold_list:
        raise UserError("--folds: no fold given")
    if args.parallel < 0:
        raise UserError(f"--parallel must be >= 0 (0: automatic), got {args.parallel}")
    bad = [m for m in args.mode_list if m not in MODES]
    if bad or not args.mode_list:
        raise UserError(f"--modes {args.modes!r}: use pad, resize or pad,resize")
    for items, name in ((args.fold_list, "--folds"), (args.mode_list, "--modes")):
        if len(set(items)) != len(items):
            raise UserError(f"{name} {','.join(items)}: repeats an entry")
    from datasets.folds import parse_fold

    for fold in args.fold_list:
        parse_fold(fold)
    check_passthrough(args)
    return args


def check_passthrough(args: argparse.Namespace) -> None:
    from tgs import options

    given = given_options(options.build_parser(), args.train_args, "train options")
    for key, instead in TRAIN_OWNED.items():
        if key in given:
            flag = f"--{key.replace('_', '-')}"
            if key == "resume":
                raise UserError("train options: --resume is automatic (a fold with a last checkpoint resumes)")
            raise UserError(f"train options: {flag} is set by ensemble.py for every fold; use ensemble.py {instead}")
    if "config" in given:  # flags given here override the file's keys, except --resize which cannot be unset
        cfg = options.load_config(given["config"], options.build_parser())
        if cfg.get("resize"):
            raise UserError(f"--config {given['config']}: 'resize' is set by ensemble.py per mode (--modes); "
                            "remove it from the file")
    args.shared = {k: given[k] for k in SHARED if k in given}
    test_given = given_options(load_script("test").build_parser(), args.test_args, "--test-args")
    for key in TEST_OWNED:
        if key in test_given and test_given[key] not in ([], None):
            raise UserError(f"--test-args: --{key.replace('_', '-')} is set by ensemble.py")
    swa_given = given_options(load_script("swa").build_parser(), args.swa_args, "--swa-args")
    for key in ("input", "output", "data_dir", "data_fold", "folds_file"):
        if key in swa_given:
            raise UserError(f"--swa-args: --{key.replace('_', '-')} is set by ensemble.py")


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
                _stop(proc)
            if procs is not None:
                procs.pop(label, None)
    if rc != 0:
        raise StepFailed(f"{script}.py failed for {label} (exit {rc}): {_error_line(tail)}; full output in {log}")


def _stop(*procs: subprocess.Popen, grace: float = 30.0) -> None:
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


def _stop_all(procs: dict) -> None:
    running = [(label, proc) for label, proc in list(procs.items()) if proc.poll() is None]
    for label, _ in running:
        print(f"stopping {label} (it resumes from its last checkpoint next time)", flush=True)
    _stop(*(proc for _, proc in running))


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


def _shared_flags(args, skip=()) -> list[str]:
    out = []
    for key, value in args.shared.items():
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


def train_and_average(job: Job, args, slot: Slot | None = None, procs=None) -> str:
    """Train (or resume) and average one fold; returns what was done."""
    if job.swa.is_file():
        print(f"[{job.label}] finished: {job.swa} exists, skipped")
        return "skipped"
    slot = slot or Slot("this process")
    size = args.pad_size if job.mode == "pad" else args.resize_size
    cmd = [*args.train_args, "--data-dir", str(args.data_dir), "--data-fold", job.fold, "--log-dir", str(job.log_dir),
           "--input-size", str(size)]
    cmd += ["--resize"] if job.mode == "resize" else []
    cmd += ["--folds-file", args.folds_file] if args.folds_file else []
    cmd += ["--device", slot.device] if slot.device else []
    cmd += list(slot.flags)
    resumed = job.last_checkpoint.is_file()
    if resumed:
        cmd += ["--resume", str(job.last_checkpoint)]
        print(f"[{job.label}] resuming training from {job.last_checkpoint}")
    _run("train", cmd, job.label, job.log, slot.env, procs, args.dry_run)
    swa = ["--input", str(job.log_dir / "models"), "--output", str(job.swa), "--data-dir", str(args.data_dir),
           "--data-fold", job.fold, *(["--folds-file", args.folds_file] if args.folds_file else []),
           *_shared_flags(args, skip=("device",) if slot.device else ()),
           *(["--device", slot.device] if slot.device else []), *slot.flags, *args.swa_args]
    _run("swa", swa, job.label, job.log, slot.env, procs, args.dry_run)
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


def slots(args) -> list[Slot]:
    """Where folds run at the same time: GPUs round-robin when 2+ are used, else CPU processes sharing the cores
    (empty: one fold after another, in this environment)."""
    gpus = visible_gpus(args.gpus, args.shared.get("device"))
    n = args.parallel or (len(gpus) if len(gpus) >= 2 else 1)
    if n < 2:
        return []
    if gpus:
        return [Slot(f"GPU {gpus[i % len(gpus)]}", {**os.environ, "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]},
                     "cuda") for i in range(n)]
    threads = args.shared.get("threads") or max(1, (os.cpu_count() or 1) // n)
    flags = () if "threads" in args.shared else ("--threads", str(threads))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return [Slot(f"process {i + 1} ({threads} thread{'s' if threads != 1 else ''})", env, None, flags)
            for i in range(n)]


def run_folds(jobs: list[Job], args) -> None:
    places = slots(args) if not args.dry_run else []
    if not places:
        for job in jobs:
            train_and_average(job, args)
        return
    print(f"running {len(places)} folds at a time: {', '.join(s.name for s in places)}")
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    failures: list[BaseException] = []
    procs: dict = {}
    stop = threading.Event()

    def worker(slot: Slot):
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                train_and_average(job, args, slot, procs=procs)
            except BaseException as exc:  # noqa: BLE001
                if not stop.is_set():
                    failures.append(exc)
                stop.set()
                _stop_all(procs)  # stop the other folds: they resume next time
                return

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in places]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C or SIGTERM here: no fold may go on training without this process
        stop.set()
        _stop_all(procs)
        for t in threads:  # their steps have ended: let them finish before the interpreter exits
            t.join(timeout=60)
        raise
    if failures:
        raise failures[0]


def ensemble_outputs(jobs: list[Job], args) -> dict:
    run = Path(args.run_dir)
    logs = run / "logs"
    data = ["--data-dir", str(args.data_dir), *(["--folds-file", args.folds_file] if args.folds_file else [])]
    tta = ["--tta"] if args.tta else []
    common = [*tta, *_shared_flags(args), *args.test_args]
    oof = []
    for fold in args.fold_list:
        swas = [str(j.swa) for j in jobs if j.fold == fold]
        prefix = run / "oof" / fold
        _run("test", [*swas, "--split", "valid", "--data-fold", fold, *data, "--output-prefix", str(prefix), *common],
             f"oof/{fold}", logs / "oof.log", dry=args.dry_run)
        oof.append(f"{prefix}-probabilities.npz")
    merged = run / "oof"
    _run("test", ["--merge-oof", *oof, "--data-dir", str(args.data_dir), "--output-prefix", str(merged),
                  *args.test_args],
         "oof", logs / "oof.log", dry=args.dry_run)
    post = run / "postprocess.json"
    _run("score", ["--search", f"{merged}-probabilities.npz", "--truth", str(Path(args.data_dir) / "train.csv"),
                   "--save-best", str(post)],
         "search", logs / "search.log", dry=args.dry_run)
    prefix = run / "ensemble"
    tuned = ["--post-config", str(post)] if args.tuned_post else []
    _run("test", [*[str(j.swa) for j in jobs], "--data-dir", str(args.data_dir), "--output-prefix", str(prefix),
                  *tuned, *common, "--message", f"ensemble of {len(jobs)} models ({','.join(args.mode_list)} x "
                                        f"{len(args.fold_list)} folds)"],
         "test", logs / "test.log", dry=args.dry_run)
    _run("score", [f"{prefix}-submission.csv", "--check", str(args.data_dir)], "check", logs / "test.log",
         dry=args.dry_run)
    return {"submission": Path(f"{prefix}-submission.csv"), "probabilities": Path(f"{prefix}-probabilities.npz"),
            "oof": Path(f"{merged}-probabilities.npz"), "postprocess": post}


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # the running steps are stopped on the way out, as on Ctrl-C


@cli
def main(argv=None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from datasets.kaggle import Layout

    Layout.of(args.data_dir).require("train_csv", "train_images", "train_masks", "sample_submission", "test_images")
    run = Path(args.run_dir)
    jobs = [Job(mode, fold, run) for mode in args.mode_list for fold in args.fold_list]
    print(f"ensemble of {len(jobs)} models: modes {','.join(args.mode_list)} x folds {','.join(args.fold_list)} "
          f"in {run}")
    run_folds(jobs, args)
    out = ensemble_outputs(jobs, args)
    if not args.dry_run:
        print(f"out-of-fold predictions: {out['oof']}")
        print(f"submission: {out['submission']} (probabilities: {out['probabilities']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
