"""ensemble.py's command line: its own options, the pass-through options of train.py, swa.py and test.py (parsed
and checked with those scripts' own parsers and the training configuration's declarations before anything runs,
into typed values) -> engine.ensemble.EnsembleOptions -> engine.ensemble.run."""
from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import threading
from dataclasses import fields

from cli import swa as swa_cli
from cli import test as test_cli
from cli import train as train_cli
from cli.common import (
    ArgumentParser,
    add_mosaics,
    add_option,
    fold_list,
    integer,
    new_parser,
    set_by_ensemble_in,
)
from engine import config
from engine.ensemble.options import MODES
from engine.jobs import EXECUTORS
from tgs.errors import UserError, cli, excerpt, few
from tgs.inputs import INPUT_MODES, InputSpec
from tgs.io import check_output

DOC = """Train, average and ensemble every fold in one command: the 9th place's 20-model ensemble.

    python ensemble.py --data-dir DATA --run-dir runs/ens -- --pretrained imagenet --vtf --loss-on-center ...
    python ensemble.py --data-dir DATA --run-dir runs/demo/ens --folds fold0,fold1 --modes resize --resize-size 32 \\
        -- --basenet unet --encoder-width 4 --max-epochs 3 --device cpu

    python ensemble.py --executor slurm --slurm-partition gpu --slurm-gpus-per-fold 2 --slurm-time 2-00:00:00 \\
        --data-dir DATA --run-dir runs/ens -- --pretrained imagenet --basenet senet154 --max-epochs 250 ...

For every mode (pad: reflect-pad 101 -> --pad-size; resize: 101 -> --resize-size) and every fold, one job of the
submitit library. --executor local (the default): processes on this machine, one fold after another or several
at a time: by default one per GPU when several are visible (each sees only its own: CUDA_VISIBLE_DEVICES); on the
CPU, --parallel N runs N folds at once with the cores shared between them. --executor slurm: one sbatch job per
fold (--slurm-* options; torchrun inside when a fold has several GPUs), all queued at once unless --parallel N;
ensemble.py waits for them (keep it running, e.g. in tmux or a small job of its own). --executor debug: every
fold in this process (for debugging). Each fold's job (its options written as data into RUN/jobs/MODE-FOLD/fold.json
and run by ``python -m engine.fold_job``):

1. training into RUN/MODE/FOLD, with train.py's options; a fold with a last checkpoint but no SWA model resumes
   from ``checkpoints/last-checkpoint-FOLD.pth``;
2. SWA of RUN/MODE/FOLD/models into RUN/MODE/FOLD_swa.pth, with swa.py's options; a fold whose SWA model exists is
   finished and skipped on the next run;

then, in this process, with all the SWA models:

3. out-of-fold predictions of each fold (its models of every mode averaged, as ``test.py --split valid``) in
   RUN/oof/FOLD-probabilities.npz, merged into RUN/oof-probabilities.npz and scored;
4. the post-processing search on them (as ``score.py --search``): the best setting, saved in RUN/postprocess.json;
5. the test predictions with flip TTA over every SWA model and that post-processing (``--default-post``: the
   defaults; flags in --test-args override either): RUN/ensemble-submission.csv (+ probabilities), checked as
   ``score.py --check`` does.

A fold is reused only when it was made from the same data, folds file (its contents), pseudo-labels and training
options: otherwise one line says what differs (--overwrite trains such folds afresh); every fold is checked before
any job is submitted. Every other output (mosaics, mosaic folds, SWA models, predictions, search, submission,
pseudo-labels) records the digests of what made it and is made again when they differ (docs/promises.md). A job
that fails is submitted again (resuming from the fold's last checkpoint) up to --max-retries times, unless a step
refused its input (exit code 2); a job pre-empted or stopped at its time limit is requeued by submitit (failures
and time limits share the --max-retries budget: a fold starts at most --max-retries + 1 times). A fold that fails
for good, Ctrl-C or a SIGTERM stops every running fold (each resumes next time). On a terminal a progress bar
shows folds done, each running fold's step and the time left; elsewhere one status line is printed per finished
fold. Job files (submitit's pickles and logs) go to RUN/jobs/.

Self-training (--pseudo-rounds K, the 1st place's rounds): after a round has predicted the test set, pseudo-labels
are chosen from its confident test predictions (pseudo.py's rule: --pseudo-confidence, --pseudo-lo/--pseudo-hi,
--pseudo-cap), and the next round trains every fold again with them (--pseudo-fraction, --pseudo-weight,
--pseudo-schedule, --pseudo-epochs go to its train.py), into RUN/round1, RUN/round2 ..., each with its own
out-of-fold score and submission; the summary prints the score per round. --pseudo-source fold (the default) keeps
the out-of-fold score honest: fold k's labels come from fold k's own models, which never saw its validation images;
--pseudo-source ensemble uses the whole ensemble (optimistic out-of-fold score, and the summary says so).

Arguments after ``--`` (or in --train-args) are train.py's options for every fold; the data, fold, log dir, resume,
input mode and size are set here. {shared} given there are used by SWA and prediction too.
Each step's output is shown prefixed with its fold and kept in RUN/logs/.""".format(
    shared=", ".join(config.flag(n) for n in config.SHARED[:-1]) + " and " + config.flag(config.SHARED[-1]))

MAX_ROUNDS = 20  # self-training rounds: the 1st place used 2; more is a typing mistake, not a plan
ALL_FOLDS = ",".join(f"fold{k}" for k in range(10))
# train.py's options that ensemble.py sets itself ({option: its flag, or what it does}) and those SWA and prediction
# take as well, from their declarations (engine/config.py); swa.py's and test.py's from their parsers (cli/common.py
# set_by_ensemble); the pseudo-label training options it takes under their own flag, for the rounds
TRAIN_OWNED = config.SET_BY_ENSEMBLE
SHARED = config.SHARED
ROUND_OPTIONS = tuple(name for name, (title, _) in config.options().items()
                      if title == "pseudo-labels" and config.spec(name).ensemble == config.flag(name))
# sbatch options set from ensemble.py's own flags (or by submitit), and what to use instead
SBATCH_OWNED = {"partition": "--slurm-partition", "time": "--slurm-time", "t": "--slurm-time",
                "gpus-per-node": "--slurm-gpus-per-fold", "gres": "--slurm-gpus-per-fold",
                "cpus-per-task": "--slurm-cpus-per-fold", "mem": "--slurm-mem", "nodes": "(one node per fold)",
                "ntasks-per-node": "(one task per fold)", "job-name": "(tgs-MODE-FOLD)", "output": "(RUN/jobs)",
                "error": "(RUN/jobs)", "signal": "(submitit's requeue)", "open-mode": "(submitit)",
                "array": "(one job per fold)", "chdir": "(the jobs run in ensemble.py's working directory)",
                "D": "(the jobs run in ensemble.py's working directory)",
                "no-requeue": "(a pre-empted or requeued fold resumes)"}
_TIME = (re.compile(r"^()(\d+):(\d\d):(\d\d)$"), re.compile(r"^(\d+)-(\d+)(?::(\d\d)(?::(\d\d))?)?$"))


def minutes(text: str) -> int:
    """An argparse type: a Slurm time limit in whole minutes (>= 1), from MINUTES, H:MM:SS or D-H[:MM[:SS]]
    (Slurm's own formats, less its ambiguous MM:SS); seconds round up."""
    text = text.strip()
    if text.isdigit():
        value = int(text)
    else:
        m = next((m for m in (p.match(text) for p in _TIME) if m), None)
        if m is None:
            raise argparse.ArgumentTypeError(f"{excerpt(text)} is not MINUTES, H:MM:SS or D-H:MM:SS")
        days, hours, mins, secs = (int(g) if g else 0 for g in m.groups())
        if mins >= 60 or secs >= 60:
            raise argparse.ArgumentTypeError(f"{excerpt(text)}: minutes and seconds must be below 60")
        value = (days * 24 + hours) * 60 + mins + (1 if secs else 0)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{excerpt(text)}: at least one minute")
    return value


def gpu_count(text: str) -> tuple:
    """An argparse type: ``N`` or ``TYPE:N`` GPUs (sbatch's --gpus-per-node syntax) -> (type or None, N)."""
    kind, _, count = text.strip().rpartition(":")
    if not count.isdigit() or (kind and not re.match(r"^[A-Za-z0-9_.-]+$", kind)):
        raise argparse.ArgumentTypeError(f"{excerpt(text)} is not N or TYPE:N (e.g. 2 or a100:2)")
    return kind or None, int(count)


def memory(text: str) -> str:
    """An argparse type: Slurm's memory syntax, e.g. 64G, 500M, 64000 (megabytes)."""
    if not re.match(r"^\d+[KMGT]?$", text.strip(), re.IGNORECASE):
        raise argparse.ArgumentTypeError(f"{excerpt(text)} is not a size like 64G or 500M")
    return text.strip().upper()


def sbatch_option(text: str) -> tuple:
    """An argparse type: ``KEY=VALUE`` (or ``KEY``: a flag) of an sbatch option -> (key, value or True)."""
    key, eq, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", key) or (eq and not value.strip()):
        raise argparse.ArgumentTypeError(f"{excerpt(text)} is not KEY=VALUE (an sbatch option, e.g. account=proj)")
    key = key.replace("_", "-")
    if key in SBATCH_OWNED:
        raise argparse.ArgumentTypeError(f"{key} is set by ensemble.py: use {SBATCH_OWNED[key]}")
    return key, value.strip() if eq else True


def build_parser() -> ArgumentParser:
    p = new_parser("ensemble.py", DOC)
    add_option(p, "data_dir", passed_on=False)
    p.add_argument("--run-dir", default="runs/ensemble",
                   help="where every fold, model and submission goes (default: runs/ensemble)")
    p.add_argument("--folds", type=fold_list, default=ALL_FOLDS,
                   help="comma-separated fold names, each image out of fold once (default: fold0,...,fold9)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated input modes, of "
                   f"{', '.join(INPUT_MODES.names())} (default: {','.join(MODES)}, the recipe's)")
    add_option(p, "folds_file", "every fold's", default=None, passed_on=False)
    for entry in INPUT_MODES.entries():  # --pad-size, --resize-size, ...: one flag per registered input mode
        p.add_argument(config.size_flag(entry.name), type=integer(1, 1024), dest=f"size_{entry.name}",
                       help=f"{entry.name} mode's model input size (default: {entry.default_size})")
    p.add_argument("--train-args", default="", help="options for every train.py (also: everything after --)")
    p.add_argument("--swa-args", default="", help="extra options for swa.py (e.g. '--batch-size 64')")
    p.add_argument("--test-args", default="",
                   help="extra options for test.py, out-of-fold and test (e.g. '--batch-size 256 --threshold 0.45')")
    p.add_argument("--no-tta", dest="tta", action="store_false", help="no flip TTA in test.py")
    p.add_argument("--default-post", dest="tuned_post", action="store_false",
                   help="submit with test.py's default post-processing instead of the setting the out-of-fold "
                        "search found (RUN/postprocess.json); flags in --test-args (--threshold ..., "
                        "--post-config FILE) override either")
    p.add_argument("--executor", choices=EXECUTORS.names(), default="local",
                   help="where the folds' jobs run: " + "; ".join(EXECUTORS.describe()) + " (default: local)")
    p.add_argument("--max-retries", type=integer(0), default=2,
                   help="times a fold's job is started again from its last checkpoint after a failure or (on "
                        "Slurm) its time limit, both counted together (default: 2); a pre-emption or a requeue by "
                        "Slurm does not count, a step that refused its input (exit 2) is not retried")
    p.add_argument("--gpus", type=gpu_list, default=None,
                   help="local GPUs for parallel folds: auto (the visible ones), none, or e.g. 0,1 (default: auto)")
    p.add_argument("--parallel", type=integer(0), default=0,
                   help="folds trained at the same time (local default: one per GPU with 2+ GPUs, else 1; on the "
                        "CPU each gets cores/N threads unless --threads is given; slurm default: every fold)")
    g = p.add_argument_group("Slurm (--executor slurm): what each fold's job asks for")
    g.add_argument("--slurm-partition", help="partition (default: the cluster's)")
    g.add_argument("--slurm-gpus-per-fold", type=gpu_count, default=None, metavar="[TYPE:]N",
                   help="GPUs of one node per fold, optionally of a type (e.g. a100:2); with 2+, train.py runs "
                        "under torchrun (default: 1; 0 when train.py's --device is cpu)")
    g.add_argument("--slurm-cpus-per-fold", type=integer(1), default=None,
                   help="CPUs per fold (default: the cluster's)")
    g.add_argument("--slurm-time", type=minutes, default=None,
                   help="time limit per job: MINUTES, H:MM:SS or D-H:MM:SS; a fold not done by then is requeued "
                        "from its last checkpoint (default: 24:00:00)")
    g.add_argument("--slurm-mem", type=memory, default=None, help="memory per fold, e.g. 64G (default: the cluster's)")
    g.add_argument("--slurm-extra", nargs="+", type=sbatch_option, action="extend", default=None, metavar="KEY=VALUE",
                   help="further sbatch options, e.g. account=proj qos=high exclusive (KEY alone: a flag)")
    add_option(p, "overwrite", "a fold made from other data or options is trained afresh instead of stopping the "
                               "run", passed_on=False)
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    j = p.add_argument_group("the jigsaw (mosaics rebuilt from the tiles: the 1st, 4th and 14th places' tool)")
    add_mosaics(j, "its contents' digest is an input of every output made from it; or, given alone, the mosaics "
                   "are built once (mosaic.py into RUN/mosaics, rebuilt only for other data). With either, the "
                   "out-of-fold search also tries the mosaic rules, and the submission (and pseudo-labels) use the "
                   "rules it kept", nargs="?", const=True)
    j.add_argument("--mosaic-folds", action="store_true",
                   help="(with --mosaics) mosaic-aware folds, RUN/folds.csv: every mosaic's train tiles, and the "
                        "likely neighbours among them, in one fold, so no validation tile has a training neighbour")
    from cli.pseudo import add_rule

    s = p.add_argument_group("self-training (pseudo-labels from the test predictions, the 1st place's rounds)")
    s.add_argument("--pseudo-rounds", type=integer(0, MAX_ROUNDS), default=0,
                   help=f"rounds after the first (at most {MAX_ROUNDS}): each trains every fold again with "
                        "pseudo-labels chosen from the previous round's test predictions, into RUN/roundR (default 0: "
                        "none)")
    s.add_argument("--pseudo-source", choices=("fold", "ensemble"), default="fold",
                   help="fold (default): fold k's next labels come from fold k's own models only, so its "
                        "out-of-fold score stays honest; ensemble: from the whole ensemble (the 1st place's way; "
                        "the out-of-fold score is then optimistic, and the summary says so)")
    add_rule(s, "pseudo-")  # pseudo.py's rule, declared once (cli/pseudo.py)
    for name in ROUND_OPTIONS:
        add_option(s, name, "in the rounds that train with pseudo-labels; default: train.py's", default=None,
                   passed_on=False)
    return p


def given_options(parser: argparse.ArgumentParser, argv: list[str], what: str) -> dict:
    """The options present in ``argv`` for ``parser`` (abbreviations and --x=y forms understood)."""
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
        if getattr(action, "set_by_ensemble", ""):
            action.type = None  # refused whatever its value (test_options, swa_options): not checked first
        if action.dest == "models":
            action.nargs = "*"

    def error(message: str):
        raise UserError(f"{what}: {message}")

    parser.error = error
    return vars(parser.parse_args(argv))


def split_fields(text: str, name: str, allowed=None) -> tuple:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise UserError(f"{name}: nothing given")
    if len(set(items)) != len(items):
        raise UserError(f"{name} {','.join(items)}: repeats an entry")
    if allowed is not None and set(items) - set(allowed):
        raise UserError(f"{name} {text!r}: use {', '.join(allowed)} or {','.join(allowed)}")
    return items


_GPU = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z-]+)$")  # an index or a CUDA_VISIBLE_DEVICES UUID


def gpu_list(text: str) -> str:
    """``--gpus``: auto, none, or a comma-separated list of GPU indices (or UUIDs), each once."""
    if text in ("auto", "none"):
        return text
    ids = [g.strip() for g in text.split(",")]
    bad = [g for g in ids if not _GPU.match(g)]
    if bad or not ids:
        raise argparse.ArgumentTypeError(f"{excerpt(text)}: use auto, none, or GPU indices such as 0,1")
    if len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"{excerpt(text)} names a GPU twice")
    return ",".join(ids)


def refusal(flag: str, how: str, every: str = "") -> str:
    """Why a pass-through option is refused: ensemble.py sets it (``how``: its own flag to use, or what it does)."""
    return f"{flag} is set by ensemble.py{every}; use ensemble.py {how}" if how.startswith("--") else f"{flag} {how}"


def train_options(train_args: list[str]):
    """Every fold's training configuration from the pass-through options (the ones ensemble.py sets refused), and
    the options swa and prediction share with it (those named)."""
    given = given_options(train_cli.build_parser(), train_args, "train options")
    for key, how in TRAIN_OWNED.items():
        if key in given:
            raise UserError(f"train options: {refusal(config.flag(key), how, ' for every fold')}")
    flags, config_file = train_cli.given(train_args)
    from_file = config.read_yaml(config_file) if config_file else {}
    for key in TRAIN_OWNED:
        if key in from_file:
            raise UserError(f"{from_file[key][1]}: set by ensemble.py ({TRAIN_OWNED[key]}); remove it from the file")
    base = config.combine(flags, from_file)
    values = base.to_dict(repeated_only=False)
    return base, {k: values[k] for k in SHARED if k in flags or k in from_file}


def test_options(test_args: list[str]) -> tuple[dict, str | None, dict]:
    """--test-args as (PredictOptions fields, a post-processing setting file, PostProcess fields): every test.py
    option that ensemble.py does not set itself (set_by_ensemble) is one of them."""
    from tgs import postprocess

    parser = test_cli.build_parser()
    test_given = given_options(parser, test_args, "--test-args")
    owned = set_by_ensemble_in(parser)
    for key, (flag, how) in owned.items():
        if test_given.get(key) not in ([], None):  # MODELS is an empty list when none is given
            raise UserError(f"--test-args: {refusal(flag, how)}")
    test_given = {k: v for k, v in test_given.items() if k not in owned}
    post_config = test_given.pop("post_config", None)
    if post_config:  # read now, not after every fold has trained
        try:
            postprocess.load_setting(post_config)
        except UserError as exc:
            raise UserError(f"--test-args: {exc}") from None
    post_fields = {f.name for f in fields(postprocess.PostProcess)}
    return ({k: v for k, v in test_given.items() if k not in post_fields}, post_config,
            {k: v for k, v in test_given.items() if k in post_fields})


def swa_options(swa_args: list[str]) -> dict:
    """--swa-args as SwaOptions fields."""
    parser = swa_cli.build_parser()
    swa_given = given_options(parser, swa_args, "--swa-args")
    for key, (flag, how) in set_by_ensemble_in(parser).items():
        if key in swa_given:
            raise UserError(f"--swa-args: {refusal(flag, how)}")
    return swa_given


def pseudo_train(a: argparse.Namespace) -> dict:
    """The training options of the pseudo-label rounds given (--pseudo-fraction ...), checked as train.py's by
    their declarations' types."""
    return {name: getattr(a, name) for name in ROUND_OPTIONS if getattr(a, name) is not None}


def parse(argv=None):
    from engine.ensemble import EnsembleOptions

    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    a = build_parser().parse_args(argv)
    mosaics_csv = given_mosaics(a.mosaics)
    check_output(a.run_dir, "--run-dir", {"--folds-file": a.folds_file, "--mosaics": mosaics_csv}, [a.data_dir])
    modes = split_fields(a.modes, "--modes", INPUT_MODES.names())
    sizes = tuple((m, getattr(a, f"size_{m}")) for m in modes if getattr(a, f"size_{m}") is not None)
    for mode, size in sizes:  # a size its mode cannot serve is refused before any fold trains
        try:
            InputSpec(mode, size)
        except UserError as exc:
            raise UserError(f"--{mode.replace('_', '-')}-size {size}: {exc}") from None
    train, shared = train_options(shlex.split(a.train_args) + passthrough)
    predict, post_config, post = test_options(shlex.split(a.test_args))
    swa = swa_options(shlex.split(a.swa_args))
    slurm = slurm_settings(a, shared.get("device"))
    from cli.pseudo import rule_of

    opts = EnsembleOptions(
        data_dir=a.data_dir, run_dir=a.run_dir, folds=a.folds, train=train, modes=modes, folds_file=a.folds_file,
        sizes=sizes, swa=swa, predict=predict, post_config=post_config,
        post=post, shared=shared, tta=a.tta, tuned_post=a.tuned_post, gpus=a.gpus or "auto", parallel=a.parallel,
        overwrite=a.overwrite, dry_run=a.dry_run, executor=a.executor, max_retries=a.max_retries, slurm=slurm,
        mosaics=a.mosaics is not None, mosaics_csv=mosaics_csv, mosaic_folds=a.mosaic_folds,
        pseudo_rounds=a.pseudo_rounds, pseudo_source=a.pseudo_source,
        pseudo_rule=rule_of(a, "pseudo-"),
        pseudo_train=pseudo_train(a))
    if a.mosaic_folds and not a.mosaics:
        raise UserError("--mosaic-folds needs --mosaics (the folds are made from them)")
    if a.mosaic_folds and a.folds_file:
        raise UserError("--mosaic-folds makes the folds file itself (RUN/folds.csv): leave out --folds-file")
    if a.mosaic_folds:
        check_output(opts.layout.folds_csv, "--mosaic-folds", {"--mosaics": mosaics_csv})
    if a.folds_file is not None:
        from datasets.folds import require_folds_file

        require_folds_file(a.folds_file)
    if opts.pseudo_train and not opts.pseudo_rounds:
        raise UserError(f"--{next(iter(opts.pseudo_train)).replace('_', '-')} goes with --pseudo-rounds N (N >= 1)")
    # every fold's configuration, in round 0 and in a pseudo-label round, must be valid before anything runs
    from dataclasses import replace

    from engine.ensemble import fold_config, jobs_of

    rounds = [opts] + ([replace(opts, pseudo_labels="RUN/pseudo-labels.npz")] if opts.pseudo_rounds else [])
    for r_opts in rounds:
        for job in jobs_of(r_opts):
            fold_config(job, r_opts)
    return opts


def given_mosaics(value: str | bool | None) -> str | None:
    """``--mosaics CSV``: the mosaics.csv given (a file, checked by the flag's type; its contents are checked
    against the data when the run starts); None when --mosaics is left out or given alone (the run builds them
    into RUN/mosaics)."""
    return None if value is None or value is True else value


def slurm_settings(a: argparse.Namespace, device: str | None = None):
    """The Slurm options as SlurmSettings; refused with another executor (they would do nothing), as is --gpus on
    Slurm (the cluster chooses the GPUs) and --parallel with the debug executor (one fold at a time). A fold asks
    for no GPU when train.py's ``device`` is cpu, unless --slurm-gpus-per-fold says otherwise."""
    from engine.jobs import SlurmSettings

    given = [name for name, value in vars(a).items() if name.startswith("slurm_") and value is not None]
    if given and a.executor != "slurm":
        raise UserError(f"--{given[0].replace('_', '-')} applies to --executor slurm only (not {a.executor})")
    if a.executor == "slurm" and a.gpus is not None:
        raise UserError("--gpus chooses GPUs of this machine; with --executor slurm use --slurm-gpus-per-fold")
    if a.executor == "debug" and a.parallel > 1:
        raise UserError("--parallel: --executor debug runs one fold at a time, in this process")
    default = SlurmSettings()
    extra = tuple(a.slurm_extra or ())
    keys = [k for k, _ in extra]
    if len(set(keys)) != len(keys):
        raise UserError(f"--slurm-extra: {few(sorted({k for k in keys if keys.count(k) > 1}))} given twice")
    gpu_type, gpus = a.slurm_gpus_per_fold or (default.gpu_type, 0 if device == "cpu" else default.gpus_per_fold)
    return SlurmSettings(partition=a.slurm_partition, gpus_per_fold=gpus, gpu_type=gpu_type,
                         cpus_per_fold=a.slurm_cpus_per_fold, time_min=a.slurm_time or default.time_min,
                         mem=a.slurm_mem, extra=extra)


def _sigterm(signum, frame):
    raise KeyboardInterrupt  # the running steps are stopped on the way out, as on Ctrl-C


@cli
def main(argv=None) -> int:
    from engine import ensemble

    opts = parse(argv)
    if threading.current_thread() is not threading.main_thread():
        return ensemble.run(opts)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return ensemble.run(opts)
    finally:
        signal.signal(signal.SIGTERM, previous)
