"""The recipe model on one GPU, in one bounded run: training steps, a real epoch, test.py, a projected fold.

    python -m bench.bench_gpu                     # H200 defaults: SENet154 recipe, batch 32, 8 minutes at most
    python -m bench.bench_gpu --tiny              # the same code with a tiny UNet on the CPU (seconds)
    python -m bench.bench_gpu --budget-s 300 --images 1800 --test-images 6000

The model is train.py's recipe (``--basenet senet154``, OC blocks in the centre and the decoder, x2 input
up-sampling, reflect-pad 101->128, the deep loss on the central 101x101, flip-TTA validation), built through
``cli.train.parse`` and ``engine.trainer.setup``, so every number is the engine's own code path:

1. model-only training steps (``engine.trainer.train_step`` on a batch already on the device: no loader) in
   fp32, bf16, bf16 + channels_last and bf16 + channels_last + ``torch.compile``: a few warm-up steps, then timed
   steps between ``torch.cuda.synchronize()`` calls; images/s and the peak GPU memory of each;
2. a real epoch (``engine.trainer.train_one_epoch``: DataLoader workers, augmentation, everything) on a synthetic
   training set (``datasets.synthetic.write_dataset``, ``--images`` training images in fold0, 10% more for its
   validation), against the same number of model-only steps: the ratio says whether the loader keeps up;
3. test.py (``cli.test.main``) with that model and flip TTA over ``--test-images`` synthetic test images, next to
   the bare prediction loop (``engine.inference.predict_models``, warm, no data loading, post-processing or
   writing);
4. one 250-epoch fold projected from what was measured: per epoch 3600 training images at the real epoch's rate,
   the validation of 400 images with flip TTA (``engine.trainer.evaluate``) and the checkpoint set
   (``engine.trainer.save_epoch``); set against the target, one fold in at most 30 minutes on one H200.

Parts 2-4 use bf16 + channels_last (fp32 where bf16 is not supported). Every part has a share of ``--budget-s``
(what a part leaves unused goes to the later ones): step loops stop early at their deadline and say so, test.py's
set is made smaller when it would not fit, and a single call that runs past its deadline (a compilation, an
epoch) is interrupted (SIGALRM) and its row left out with a note. The compile row runs last, so that a slow
compilation can only cost its own row. What does not apply (bf16 unsupported, compile failing, out of memory)
becomes a note, never a crash. Output: a markdown table for the README and a one-line verdict against the target.
Peak GPU memory is ``torch.cuda.max_memory_allocated`` (n/a on the CPU).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch  # noqa: E402

import tgs.compat  # noqa: F401  (before timm / torchvision)
from cli import test as test_cli  # noqa: E402
from cli import train as train_cli  # noqa: E402
from cli.common import ArgumentParser, integer  # noqa: E402
from datasets.synthetic import write_dataset  # noqa: E402
from engine import distributed, inference, trainer  # noqa: E402
from tgs.errors import UserError, cli  # noqa: E402

# the target: one 250-epoch fold (3600 training images and 400 validation images an epoch) in 30 minutes
EPOCHS = 250
TRAIN_PER_EPOCH = 3600
VALID_PER_EPOCH = 400
TARGET_FOLD_S = 30 * 60

# train.py flags of the measured model; everything else is train.py's defaults (the recipe)
COMMON = ["--input-size", "128", "--loss", "deep", "--loss-on-center", "--vtf", "--pretrained", "none",
          "--optim", "adamw", "--lr-scheduler", "noam", "--max-epochs", str(EPOCHS)]
RECIPE = ["--basenet", "senet154", "--oc", "both", "--input-upsample", "2", *COMMON]
# OC only in the centre (an OC block in each decoder level attends over all 128x128 positions: minutes on a CPU);
# one torch thread (as fast for tensors this small, and immune to OpenMP spin-waits on a shared CPU)
TINY = ["--basenet", "unet", "--encoder-width", "4", "--center-channels", "16", "--decoder-channels", "8",
        "--oc", "center", "--input-upsample", "1", "--threads", "1", *COMMON]

# (key, label, train.py flags) of part 1's rows; "compile" last (see the module's docstring)
ROWS = [("fp32", "fp32", []),
        ("bf16", "bf16", ["--amp", "bf16"]),
        ("bf16-cl", "bf16 + channels_last", ["--amp", "bf16", "--channels-last"]),
        ("compile", "bf16 + channels_last + torch.compile", ["--amp", "bf16", "--channels-last", "--compile"])]

# sizes: the H200 run and the tiny CPU run; a flag given on the command line wins
PRESETS = {
    "gpu": dict(device="auto", batch_size=32, images=TRAIN_PER_EPOCH, test_images=18000, budget_s=480.0, steps=20,
                warmup=3, workers=2),
    "tiny": dict(device="cpu", batch_size=2, images=8, test_images=16, budget_s=120.0, steps=2, warmup=1,
                 workers=1),
}
# shares of the budget (a part's share of what is left when it starts, against the parts still to come)
WEIGHTS = {"fp32": 1.0, "bf16": 1.0, "bf16-cl": 1.0, "epoch": 2.0, "test": 3.0, "compile": 2.5}
RESERVE = 0.03  # of the budget, kept back for the grace of interrupted calls and the report


class OverBudget(BaseException):
    """A call ran past its deadline (a BaseException, so that no ``except Exception`` on the way swallows it)."""


def importing(frame) -> bool:
    """True when ``frame`` runs inside an import (a module's top-level code, or importlib itself)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt the block with :class:`OverBudget` after ``seconds`` (SIGALRM; not available off the main thread
    or off POSIX, where the block just runs). Never in the middle of an import (a half-imported module would
    break every later part): the interruption then waits for the import to finish."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        if importing(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise OverBudget(f"over its budget of {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Budget:
    """Deadlines from ``total`` seconds: each part gets its weight's share of the time left (less a reserve)."""

    def __init__(self, total: float, weights: dict):
        self.start = time.perf_counter()
        self.total = total
        self.pending = dict(weights)

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)

    def allot(self, part: str) -> float:
        """Seconds for ``part`` (it is then no longer pending)."""
        weight = self.pending.pop(part)
        spare = self.left() - RESERVE * self.total
        return max(0.0, spare * weight / (weight + sum(self.pending.values())))


@dataclass
class Row:
    part: int
    what: str
    config: str
    images: int | None = None
    seconds: float | None = None
    peak_gib: float | None = None
    note: str = ""
    measured: bool = True  # False: a projection from other rows

    @property
    def rate(self) -> float | None:
        """Images per second of a measurement (a projection's images and seconds are not one rate)."""
        return self.images / self.seconds if self.measured and self.images and self.seconds else None


@dataclass
class Plan:
    """What to measure and where: sizes from the options, the device, the temporary folder."""

    device: torch.device
    batch_size: int
    images: int
    test_images: int
    steps: int
    warmup: int
    workers: int
    model_flags: list
    model_name: str
    tmp: Path
    amp_ok: bool
    train_dir: Path | None = None
    generate_s_per_image: float = 0.0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def train_argv(self, name: str, flags: list) -> list[str]:
        return ["--data-dir", str(self.train_dir), "--log-dir", str(self.tmp / f"run-{name}"),
                "--batch-size", str(self.batch_size), "--dataload-workers-nums", str(self.workers),
                "--device", str(self.device), *self.model_flags, *flags]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def bf16_supported(device: torch.device) -> bool:
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else True


def failure(exc: BaseException) -> str:
    """A short note for an exception (its type and the first line of its message)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "out of memory"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:120]}"


def close(ctx: trainer.Context | None, device: torch.device) -> None:
    if ctx is not None and ctx.writer is not None:
        ctx.writer.close()
    inference.release(device)


# -- part 1: model-only steps ---------------------------------------------------------------------------------------
def device_batch(plan: Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch as the loader hands it over (uint8 images, bool masks, (B, 1, 101, 101)) on the device."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (plan.batch_size, 1, 101, 101), dtype=torch.uint8, generator=g)
    masks = torch.rand(plan.batch_size, 1, 101, 101, generator=g) > 0.6
    return images.to(plan.device), masks.to(plan.device)


def model_steps(ctx: trainer.Context, batch, steps: int, deadline: float, where: str) -> tuple[int, float]:
    """(steps done, seconds) of up to ``steps`` calls of ``trainer.train_step``, at least one, stopping at
    ``deadline`` (perf_counter). Each step ends with the loss's finiteness check, a device synchronisation."""
    ctx.model.train()
    sync(ctx.info.device)
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        trainer.train_step(ctx, *batch, where=f"{where}, step {done}")
        done += 1
        if time.perf_counter() >= deadline:
            break
    sync(ctx.info.device)
    return done, time.perf_counter() - t0


def train_row(plan: Plan, key: str, label: str, flags: list, seconds: float, keep: bool):
    """One row of part 1: build the model (trainer.setup), warm up, time ``plan.steps`` steps. Returns (row,
    context or None); the context is kept only when ``keep`` (for parts 2-4), else released."""
    row = Row(1, "training steps, model only", label)
    if "--amp" in flags and not plan.amp_ok:
        row.note = f"left out: bf16 is not supported on {plan.device}"
        return row, None
    start = time.perf_counter()
    soft = start + 0.85 * seconds  # the step loops stop here; the rest is the margin of the step under way
    ctx = None
    try:
        with time_limit(seconds):  # the hard stop, for a single call that runs away (a compilation)
            ctx = trainer.setup(train_cli.parse(plan.train_argv(key, flags)), distributed.setup(str(plan.device)))
            batch = device_batch(plan)
            reset_peak(plan.device)
            t0 = time.perf_counter()
            model_steps(ctx, batch, 1, 0.0, "warm-up")
            first_s = time.perf_counter() - t0
            if plan.warmup > 1:
                model_steps(ctx, batch, plan.warmup - 1, soft, "warm-up")
            done, elapsed = model_steps(ctx, batch, plan.steps, soft, "timed")
        row.images, row.seconds, row.peak_gib = done * plan.batch_size, elapsed, peak_gib(plan.device)
        notes = [f"{done} steps of batch {plan.batch_size} after {plan.warmup} warm-up"]
        if done < plan.steps:
            notes.append(f"cut short at the budget (asked {plan.steps})")
        if key == "compile":
            notes.append(f"first step (compilation) {first_s:.0f} s")
        notes.append(f"setup {t0 - start:.0f} s")
        row.note = "; ".join(notes)
    except OverBudget as exc:
        row.note = f"left out: {exc} (setup, warm-up{' and compilation' if key == 'compile' else ''})"
    except UserError:  # a bad option: the same in every row
        raise
    except Exception as exc:  # noqa: BLE001  (whatever does not apply here is a note, not a crash)
        row.note = f"left out: {failure(exc)}"
    if row.seconds is None or not keep:
        close(ctx, plan.device)
        ctx = None
    return row, ctx


def reset_compiler() -> None:
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


# -- part 2: a real epoch -------------------------------------------------------------------------------------------
def epoch_images(ctx: trainer.Context) -> int:
    loader = ctx.train_loader
    return len(loader) * loader.batch_size if loader.drop_last else len(ctx.train_set)


def real_epoch(plan: Plan, ctx: trainer.Context, label: str, model_rate: float, seconds: float) -> list[Row]:
    """``train_one_epoch`` against as many model-only steps as the epoch has batches."""
    n, batches = epoch_images(ctx), len(ctx.train_loader)
    what = f"training epoch (train_one_epoch: loader workers {plan.workers}, augmentation)"
    epoch = Row(2, what, label, note=f"{batches} batches of {plan.batch_size}")
    steps = Row(2, "model-only steps, same number of batches", label)
    expected = 2 * n / model_rate  # the epoch, if the loader keeps up, then the same steps again
    if expected > seconds:
        epoch.note = (f"left out: {n} images need ~{expected:.0f} s at the model-only rate, over the part's "
                      f"{seconds:.0f} s (lower --images)")
        return [epoch]
    start = time.perf_counter()
    try:
        reset_peak(plan.device)
        with time_limit(0.75 * seconds):
            trainer.train_one_epoch(ctx, 0)
            sync(plan.device)
        epoch.images, epoch.seconds, epoch.peak_gib = n, time.perf_counter() - start, peak_gib(plan.device)
    except OverBudget:
        bound = n / (time.perf_counter() - start)
        epoch.note = f"left out: the epoch ran past {0.75 * seconds:.0f} s: under {bound:.0f} images/s (the loader?)"
        return [epoch]
    done, elapsed = model_steps(ctx, device_batch(plan), batches, start + seconds, "model-only")
    steps.images, steps.seconds = done * plan.batch_size, elapsed
    ratio = epoch.rate / steps.rate
    steps.note = (f"{done} steps{' (cut short at the budget)' if done < batches else ''}; epoch / model-only "
                  f"{ratio:.2f} ({'the loader keeps up' if ratio >= 0.9 else 'the loader is a bottleneck'}, "
                  "target >= 0.9)")
    return [epoch, steps]


def validation(plan: Plan, ctx: trainer.Context, label: str, seconds: float) -> tuple[Row, dict | None]:
    """``trainer.evaluate`` with flip TTA on the fold's validation images (once to warm up, once timed)."""
    n = len(ctx.valid_images)
    row = Row(4, "validation, flip TTA (trainer.evaluate)", label)
    try:
        with time_limit(seconds):
            trainer.evaluate(ctx, 0)
            sync(plan.device)
            t0 = time.perf_counter()
            metrics = trainer.evaluate(ctx, 0)
            sync(plan.device)
        row.images, row.seconds = n, time.perf_counter() - t0
        row.note = f"{VALID_PER_EPOCH} images: {row.seconds * VALID_PER_EPOCH / n:.2f} s"
        return row, metrics
    except OverBudget as exc:
        row.note = f"left out: {exc}"
    except Exception as exc:  # noqa: BLE001
        row.note = f"left out: {failure(exc)}"
    return row, None


def checkpoint_save(ctx: trainer.Context, metrics: dict, seconds: float) -> Row:
    """``trainer.save_epoch`` of epoch 0, every kind improved: the two writes and the links of an epoch."""
    row = Row(4, "checkpoint set (trainer.save_epoch)", "fp32 weights + AdamW state")
    row_metrics = {"epoch": 0, **{k: v for k, v in metrics.items() if not k.startswith("_")}}
    try:
        with time_limit(seconds):
            t0 = time.perf_counter()
            trainer.save_epoch(ctx, 0, row_metrics, list(trainer.KINDS))
        row.seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (ctx.layout.checkpoint("last"), ctx.layout.model("last")))
        row.note = f"2 files, {size / 2 ** 20:.0f} MiB, fsync'd; per epoch"
    except OverBudget as exc:
        row.note = f"left out: {exc}"
    return row


# -- part 3: test.py ------------------------------------------------------------------------------------------------
def test_set_size(plan: Plan, model_rate: float | None, seconds: float) -> int:
    """Test images that fit in ``seconds``: writing them, test.py and the prediction loop (each at least the
    model-only training rate: a forward and a flipped forward cost about 2/3 of a training step)."""
    per_image = plan.generate_s_per_image + (2.0 / model_rate if model_rate else 0.0)
    if per_image <= 0:
        return plan.test_images
    return max(1, min(plan.test_images, int(0.8 * seconds / per_image)))


def run_test_py(plan: Plan, checkpoint: Path, label: str, amp: str, model_rate: float | None,
                seconds: float) -> list[Row]:
    """test.py --tta over a synthetic test set, then the bare prediction loop over the same images."""
    start = time.perf_counter()
    n = test_set_size(plan, model_rate, seconds)
    test_row = Row(3, "test.py --tta, 1 model (cli.test.main)", label)
    loop_row = Row(3, "prediction loop only (inference.predict_models, warm)", label)
    cut = f"; set cut from {plan.test_images} images to fit the budget" if n < plan.test_images else ""
    data = plan.tmp / f"test-{n}"
    pred_bs = 2 * plan.batch_size
    flags = ["--amp", amp] + (["--channels-last"] if amp != "none" else [])
    argv = [str(checkpoint), "--tta", "--data-dir", str(data), "--output-prefix", str(plan.tmp / "pred" / "test"),
            "--device", str(plan.device), "--batch-size", str(pred_bs), *flags]
    try:
        with time_limit(max(1.0, seconds - (time.perf_counter() - start))):
            write_dataset(data, n_train=0, n_test=n, seed=1)
            written = time.perf_counter()
            out, err = io.StringIO(), io.StringIO()
            reset_peak(plan.device)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = test_cli.main(argv)
            test_s = time.perf_counter() - written
            if code != 0:
                raise RuntimeError(f"test.py exited {code}: {(err.getvalue().strip().splitlines() or [''])[-1]}")
            test_row.images, test_row.seconds, test_row.peak_gib = n, test_s, peak_gib(plan.device)
            phases = next((line[6:] for line in out.getvalue().splitlines() if line.startswith("time: ")), "")
            test_row.note = (f"batch {pred_bs}; {phases}; writing the {n} images took {written - start:.0f} s"
                             f"{cut}")
            if n < 18000:
                test_row.note += f"; 18000 images: ~{test_s * 18000 / n:.0f} s"
            images = inference.test_set(data).images
            _, _, _, forward_s = inference.predict_models(
                [checkpoint], images, plan.device, batch_size=pred_bs, tta=True, amp=amp,
                channels_last=amp != "none", log=lambda s: None)
        loop_row.images, loop_row.seconds = n, forward_s
        loop_row.note = f"test.py overhead over it: {(test_s - forward_s) / forward_s:+.0%}"
    except OverBudget as exc:
        (test_row if test_row.seconds is None else loop_row).note = f"left out: {exc}{cut}"
    except Exception as exc:  # noqa: BLE001
        (test_row if test_row.seconds is None else loop_row).note = f"left out: {failure(exc)}"
    return [test_row, loop_row]


# -- part 4: the projected fold -------------------------------------------------------------------------------------
def projection(train_rate: float | None, source: str, valid: Row, save: Row) -> tuple[list[Row], str]:
    """Rows of the projected epoch and fold, and the verdict against the target."""
    if train_rate is None:
        return [], "verdict: no projection (no training rate was measured)"
    valid_s = valid.seconds * VALID_PER_EPOCH / valid.images if valid.seconds else 0.0
    save_s = save.seconds or 0.0
    epoch_s = TRAIN_PER_EPOCH / train_rate + valid_s + save_s
    fold_s = EPOCHS * epoch_s
    missing = [name for name, r in (("validation", valid), ("checkpoint", save)) if r.seconds is None]
    gap = f" (without {' and '.join(missing)}: not measured)" if missing else ""
    epoch = Row(4, f"projected epoch: {TRAIN_PER_EPOCH} training + {VALID_PER_EPOCH} validation images + save",
                source, TRAIN_PER_EPOCH, epoch_s, note=f"training {TRAIN_PER_EPOCH / train_rate:.1f} s{gap}",
                measured=False)
    fold = Row(4, f"projected {EPOCHS}-epoch fold", source, TRAIN_PER_EPOCH * EPOCHS, fold_s,
               note=f"{fold_s / 60:.1f} min; target {TARGET_FOLD_S / 60:.0f} min on one H200", measured=False)
    per_epoch = TARGET_FOLD_S / EPOCHS - valid_s - save_s
    need = (f"the target needs {TRAIN_PER_EPOCH / per_epoch:.0f} training images/s" if per_epoch > 0 else
            f"validation and saving alone take {valid_s + save_s:.1f} s of the {TARGET_FOLD_S / EPOCHS:.1f} s an "
            "epoch may take")
    ok = fold_s <= TARGET_FOLD_S
    verdict = (f"verdict: one {EPOCHS}-epoch fold projected at {fold_s / 60:.1f} min against the target of "
               f"{TARGET_FOLD_S / 60:.0f} min: {'MEETS' if ok else 'MISSES'} it ({source}: {train_rate:.3g} "
               f"training images/s; {need}){gap}")
    return [epoch, fold], verdict


# -- the report -----------------------------------------------------------------------------------------------------
HEAD = ["part", "measurement", "configuration", "images", "seconds", "images/s", "peak GiB", "note"]


def table(rows: list[Row]) -> str:
    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        seconds = num(r.seconds, ".2f" if (r.seconds or 0) < 100 else ".0f")
        cells = [str(r.part), r.what, r.config, num(r.images, "d"), seconds, num(r.rate, ".1f"),
                 num(r.peak_gib, ".1f"), r.note.replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def header(plan: Plan, budget_s: float) -> str:
    if plan.cuda:
        p = torch.cuda.get_device_properties(plan.device)
        where = (f"{p.name} ({p.total_memory / 2 ** 30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN "
                 f"{torch.backends.cudnn.version()}, fp32 TF32: convolutions {torch.backends.cudnn.allow_tf32}, "
                 f"matmul {torch.backends.cuda.matmul.allow_tf32}")
    else:
        where = "CPU"
    return (f"{plan.model_name}; torch {torch.__version__}; {where}; {os.cpu_count()} CPU cores; batch "
            f"{plan.batch_size}; loader workers: {plan.workers}; budget {budget_s:.0f} s")


# -- the run --------------------------------------------------------------------------------------------------------
def positive(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text[:20]}")
    return value


def parse_args(argv=None):
    p = ArgumentParser(prog="python -m bench.bench_gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="a tiny UNet, few images and steps, on the CPU unless --device says otherwise (a check that "
                        "the benchmark works, in seconds)")
    p.add_argument("--device", help="auto (cuda if present), cpu, cuda, cuda:N (default: auto; --tiny: cpu)")
    p.add_argument("--batch-size", type=integer(1), help="training batch (default 32; --tiny 2)")
    p.add_argument("--images", type=integer(2), help="training images of the real epoch (default 3600; --tiny 8)")
    p.add_argument("--test-images", type=integer(1), help="test images of test.py (default 18000; --tiny 16)")
    p.add_argument("--budget-s", type=positive, help="seconds for the whole run (default 480; --tiny 120)")
    p.add_argument("--steps", type=integer(1), help="timed model-only steps per row (default 20; --tiny 2)")
    p.add_argument("--warmup", type=integer(1), help="warm-up steps per row (default 3; --tiny 1)")
    p.add_argument("--workers", type=integer(0), help="DataLoader workers (default 2, train.py's; --tiny 1)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row")
    args = p.parse_args(argv)
    for key, value in PRESETS["tiny" if args.tiny else "gpu"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def train_set_size(images: int) -> int:
    """Images of a synthetic training set whose fold0 (the first of 10 consecutive chunks, the validation) leaves
    at least ``images`` to train on, with at least one to validate: 4000 for 3600."""
    return max(10, -(-10 * images // 9))


def write_train_set(plan: Plan) -> float:
    """The training set of the real epoch (:func:`train_set_size`). Returns the seconds it took."""
    t0 = time.perf_counter()
    total = train_set_size(plan.images)
    plan.train_dir = plan.tmp / "train"
    write_dataset(plan.train_dir, n_train=total, n_test=0, seed=0)
    spent = time.perf_counter() - t0
    plan.generate_s_per_image = spent / total
    return spent


def measure(plan: Plan, budget: Budget, compile_row: bool) -> tuple[list[Row], str]:
    rows: list[Row] = []
    data_s = write_train_set(plan)
    print(f"... wrote {train_set_size(plan.images)} synthetic training images in {data_s:.1f} s", flush=True)

    main_key = "bf16-cl" if plan.amp_ok else "fp32"
    main_label = dict((k, label) for k, label, _ in ROWS)[main_key]
    amp = "bf16" if plan.amp_ok else "none"
    ctx, rates = None, {}
    for key, label, flags in ROWS[:-1]:
        print(f"... part 1: {label}", flush=True)
        row, kept = train_row(plan, key, label, flags, budget.allot(key), keep=key == main_key)
        rows.append(row)
        rates[key] = row.rate
        ctx = kept if key == main_key else ctx

    valid = Row(4, "validation, flip TTA (trainer.evaluate)", main_label, note="left out: no model")
    save = Row(4, "checkpoint set (trainer.save_epoch)", "", note="left out: no model")
    test_rows = [Row(3, "test.py --tta, 1 model (cli.test.main)", main_label, note="left out: no model")]
    seconds = budget.allot("epoch")
    if ctx is not None:
        print("... part 2: a real epoch", flush=True)
        end = time.perf_counter() + seconds
        rows += real_epoch(plan, ctx, main_label, rates[main_key], 0.7 * seconds)
        valid, metrics = validation(plan, ctx, main_label, max(1.0, 0.6 * (end - time.perf_counter())))
        if metrics is not None:
            save = checkpoint_save(ctx, metrics, max(1.0, end - time.perf_counter()))
        seconds = budget.allot("test")
        test_rows[0].note = "left out: no checkpoint was saved"
        if save.seconds is not None:
            print("... part 3: test.py", flush=True)
            test_rows = run_test_py(plan, ctx.layout.model("last"), main_label, amp, rates[main_key], seconds)
        close(ctx, plan.device)
    else:
        budget.allot("test")
    rows += test_rows

    if compile_row:
        key, label, flags = ROWS[-1]
        print(f"... part 1: {label}", flush=True)
        row, _ = train_row(plan, key, label, flags, budget.allot("compile"), keep=False)
        reset_compiler()
        rows.insert(len(ROWS) - 1, row)
        rates[key] = row.rate

    epoch_rows = [r for r in rows if r.part == 2 and r.rate]
    if len(epoch_rows) == 2:
        source, rate = f"real epoch, {main_label}", epoch_rows[0].rate
    else:
        source, rate = f"model-only steps, {main_label} (no real epoch)", rates.get(main_key)
    projected, verdict = projection(rate, source, valid, save)
    rows += [valid, save, *projected]
    best = max((k for k in rates if rates[k]), key=lambda k: rates[k], default=None)
    if len(epoch_rows) == 2 and best not in (None, main_key):  # e.g. compiled: faster steps, the same loader
        ratio = min(1.0, epoch_rows[0].rate / epoch_rows[1].rate)
        bound, _ = projection(rates[best] * ratio, f"model-only {best} x the epoch's loader ratio {ratio:.2f}",
                              valid, save)
        bound[-1].what += " at the fastest model-only rate"
        rows.append(bound[-1])
    return rows, verdict


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    device = distributed.resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="tgs-bench-gpu-") as tmp:
        plan = Plan(device=device, batch_size=args.batch_size, images=args.images, test_images=args.test_images,
                    steps=args.steps, warmup=args.warmup, workers=args.workers,
                    model_flags=TINY if args.tiny else RECIPE,
                    model_name=("tiny UNet (width 4, OC centre, pad 101->128, deep loss, 1 torch thread)"
                                if args.tiny else
                                "SENet154 recipe (OC both, x2 input up-sampling, pad 101->128, deep loss)"),
                    tmp=Path(tmp), amp_ok=bf16_supported(device))
        print(header(plan, args.budget_s), flush=True)
        weights = {k: w for k, w in WEIGHTS.items() if k != "compile" or not args.no_compile}
        budget = Budget(args.budget_s, weights)
        rows, verdict = measure(plan, budget, compile_row=not args.no_compile)
        spent = time.perf_counter() - budget.start
    print()
    print(f"{plan.model_name}, {device}, batch {plan.batch_size}; {spent:.0f} s of a {args.budget_s:.0f} s budget")
    print()
    print(table(rows))
    print()
    if args.tiny:
        verdict += " [tiny model: not the target's configuration]"
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
