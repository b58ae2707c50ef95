"""The ensemble's own steps, run in this process with all the SWA models: predictions (out-of-fold, merged, test),
the post-processing search, the submission's check and the mosaics. Each is a typed step (its options as values)
that calls the engine directly; :func:`run_here` shows its output prefixed with its label and appends it to its
log (RUN/logs/), and :func:`describe` is what ``--dry-run`` prints."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.ensemble.options import EnsembleOptions
from engine.jobs import StepFailed, StepRefused
from engine.prediction import PredictOptions
from tgs import postprocess
from tgs.errors import UserError


@dataclass(frozen=True)
class Predict:
    """Predict with models, or merge out-of-fold predictions (engine.prediction)."""

    opts: PredictOptions
    name = "predict"

    def __call__(self) -> int:
        from engine import prediction

        return prediction.run(self.opts)


@dataclass(frozen=True)
class Search:
    """The honest post-processing search on out-of-fold predictions (engine.scoring)."""

    oof: str
    truth: str
    save_best: str
    mosaics: str | None = None
    oof_folds: tuple = ()
    folds_file: str | None = None
    name = "search"

    def __call__(self) -> int:
        from engine import scoring

        return scoring.search(self.oof, self.truth, self.save_best, self.mosaics, self.oof_folds, self.folds_file)


@dataclass(frozen=True)
class Check:
    """A test-set submission's format and ids (engine.scoring)."""

    submission: str
    data_dir: str
    name = "check"

    def __call__(self) -> int:
        from engine import scoring

        return scoring.check(self.submission, self.data_dir)


@dataclass(frozen=True)
class BuildMosaics:
    """The mosaics of the train and test tiles (datasets.mosaic) into ``out``."""

    data_dir: str
    out: str
    name = "mosaics"

    def __call__(self) -> int:
        from datasets import mosaic

        s = mosaic.build(self.data_dir, self.out)
        print(f"placed {s['with_neighbour']} of {s['tiles']} tiles in {s['mosaics']} mosaics; wrote {s['out']}")
        return 0


def describe(step) -> str:
    """``NAME key=value ...``: the step's options that are set (for --dry-run)."""
    values = dataclasses.asdict(step.opts) if isinstance(step, Predict) else dataclasses.asdict(step)
    if isinstance(step, Predict):
        values["post"] = step.opts.post.describe()
    shown = {k: v for k, v in values.items() if v not in (None, (), [], False, "")}
    return f"{step.name} " + " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                                      for k, v in shown.items())


class _Prefixed(io.TextIOBase):
    """Lines written here go to ``log`` and, prefixed with ``[label]``, to ``out``."""

    def __init__(self, label: str, log, out):
        self.label, self.log, self.out, self.part = label, log, out, ""

    def write(self, text: str) -> int:
        self.part += text
        *lines, self.part = self.part.split("\n")
        for line in lines:
            self.log.write(line + "\n")
            self.out.write(f"[{self.label}] {line}\n")
        self.log.flush()
        self.out.flush()
        return len(text)

    def close_line(self) -> None:
        if self.part:
            self.write("\n")


def run_here(step, label: str, log: Path, dry: bool = False) -> None:
    """Run ``step`` in this process, its output prefixed and kept in ``log``; a user or data error it meets stops
    the run with one line naming the step (StepRefused), any other failure too (StepFailed)."""
    if dry:
        print(f"[{label}] would run: {describe(step)}")
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {describe(step)}\n")
        out = _Prefixed(label, fh, sys.stdout)
        try:
            with contextlib.redirect_stdout(out):
                code = step()
        except UserError as exc:
            raise StepRefused(f"the {step.name} step failed for {label}: {exc}; full output in {log}") from None
        finally:
            out.close_line()
    if code:
        raise StepFailed(f"the {step.name} step failed for {label} (exit {code}); full output in {log}")


def predict_options(opts: EnsembleOptions, output_prefix: str, post_config: str | None = None,
                    **fields) -> PredictOptions:
    """A prediction of the run: the data, TTA, the shared and given prediction options, the post-processing of
    ``post_config`` (or the defaults) with the given values, and ``fields``. A setting file given for prediction
    replaces ``post_config``."""
    config = opts.post_config or post_config
    if opts.dry_run and config and not Path(config).is_file():  # the search has not made it yet
        post, source = postprocess.DEFAULTS, f"{config}, once the search has made it"
    else:
        post, source = postprocess.resolve(config, opts.post)
    values = {"data_dir": str(opts.data_dir), "tta": opts.tta, **opts.shared, **fields, **opts.predict}
    return PredictOptions(output_prefix=output_prefix, post=post, post_source=source, **values)
