"""test.py end to end against the pure model forward, and its peak memory with 1 and with many models.

    python -m bench.bench_test                          # 18000 synthetic test images (Kaggle's test set size)
    python -m bench.bench_test --images 2000 --models 20 --threads 1

1. A synthetic dataset with ``--images`` test images (kept in runs/bench_test/ for the next run; ``--data DIR``
   uses an existing one) and small random models (``--width``, ``--mode``, ``--size``) saved as checkpoints.
2. Time: ``test.py --tta MODEL`` next to the pure model forward for the same images: only the ``model(x)`` and
   ``model(flip(x))`` calls, same batch size and threads. Overhead = (test.py - forward) / forward: loading the
   data and the checkpoint, encoding, TTA bookkeeping, accumulation, post-processing, RLE, CSV and ``.npz``.
   Measured twice: (a) test.py's ``main()`` run in this process with the model wrapped by a timer, so the forward
   time and the total come from the same run (robust on a shared machine); (b) test.py in a subprocess (wall
   clock, interpreter start and imports included, PNG cache warm) against the pure forward timed in a
   subprocess of its own (before and after test.py; the faster of the two). Every process sets up the CPU as
   test.py does (``tgs.runtime.setup_cpu``: threads, and glibc malloc keeping its heap); ``--glibc-defaults``
   adds both subprocess measurements with ``TGS_MALLOC=default`` to show what that setting is worth.
3. Memory: peak RSS (``RUSAGE_CHILDREN`` of a small launcher process) of ``test.py --tta`` with 1 and with
   ``--models`` models on the same images (an even smaller UNet, ``--memory-width`` / ``--memory-size``, so that
   20 of them run quickly on a CPU; the models' own weights are a few hundred KiB either way: what is compared is
   test.py's buffers).

Targets: overhead at most 15%; peak memory with many models at most 1.2x the one-model peak.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tgs.compat  # noqa: F401  (before timm / torchvision)

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=18000, help="test images (synthetic)")
    p.add_argument("--data", help="an existing dataset in Kaggle's layout instead of a synthetic one")
    p.add_argument("--models", type=int, default=20, help="models of the memory comparison")
    p.add_argument("--width", type=int, default=4, help="encoder width of the small UNet")
    p.add_argument("--mode", choices=("pad", "resize"), default="resize")
    p.add_argument("--size", type=int, default=64, help="model input side")
    p.add_argument("--memory-width", type=int, default=2, help="encoder width of the memory comparison's models")
    p.add_argument("--memory-size", type=int, default=32, help="their input side (resize)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--glibc-defaults", action="store_true",
                   help="also time (b) with glibc malloc's default settings (TGS_MALLOC=default)")
    p.add_argument("--forward-only", metavar="MODEL", help=argparse.SUPPRESS)  # (b)'s pure forward subprocess
    return p.parse_args(argv)


def dataset(args) -> Path:
    if args.data:
        return Path(args.data)
    root = ROOT / "runs" / "bench_test" / f"data-{args.images}"
    if not (root / "sample_submission.csv").is_file():
        from datasets.synthetic import write_dataset

        print(f"writing a synthetic dataset with {args.images} test images to {root} ...", flush=True)
        write_dataset(root, n_train=20, n_test=args.images, seed=0)
    return root


def small_models(folder: Path, count: int, width: int, mode: str, size: int, name: str) -> list[Path]:
    import models
    from tgs.inputs import InputSpec

    spec = InputSpec(mode, size)
    w = width
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        model = models.build_model(encoder="unet", encoder_width=w, decoder_channels=2 * w, center_channels=4 * w,
                                   fuse_channels=2 * w, image_channels=2 * w, input_upsample=1, oc_decoder=False)
        paths.append(models.save_checkpoint(folder / f"{name}{seed:02d}.pth", model.eval(), spec, {"fold": "fold0"}))
    return paths


@torch.inference_mode()
def pure_forward(path: Path, images: np.ndarray, args) -> float:
    """Seconds of model(x) + model(flip(x)) over all images (inputs prepared outside the timed region), without
    autograd, as in test.py."""
    import models

    device = torch.device(args.device)
    loaded = models.load(path, device)
    model, spec = loaded.model, loaded.input_spec
    model(spec.encode_images(torch.from_numpy(images[:2])[:, None].to(device)))  # warm-up
    total = 0.0
    for first in range(0, len(images), args.batch_size):
        x = spec.encode_images(torch.from_numpy(images[first:first + args.batch_size])[:, None].to(device))
        xf = torch.flip(x, dims=[3])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        model(xf)
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - t0
    return total


class TimedModel(torch.nn.Module):
    """A model whose forward calls add their seconds to ``seconds`` (the model time inside test.py)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x):
        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.model(x)
        if cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


@contextlib.contextmanager
def timed_models():
    """While inside: every ``models.load`` wraps its model in :class:`TimedModel`; yields the list of them (their
    ``seconds`` summed is the time spent in the models' forward calls)."""
    import models

    timed, real_load = [], models.load

    def load(path, device="cpu"):
        loaded = real_load(path, device)
        loaded.model = TimedModel(loaded.model)
        timed.append(loaded.model)
        return loaded

    models.load = load
    try:
        yield timed
    finally:
        models.load = real_load


def in_process(model_paths, data: Path, prefix: Path, args) -> tuple[float, float]:
    """(total seconds of test.py's main(), seconds spent in the model's forward calls) from one run."""
    import io
    from contextlib import redirect_stdout

    from cli import test as script

    with timed_models() as timed:
        argv = ["--tta", *map(str, model_paths), "--data-dir", str(data), "--output-prefix", str(prefix),
                "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            code = script.main(argv)
        total = time.perf_counter() - t0
    if code != 0:
        sys.exit("test.py failed in-process")
    return total, sum(m.seconds for m in timed)


def _env(args, malloc: str = "") -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("TGS_MALLOC", None)
    if malloc:
        env["TGS_MALLOC"] = malloc
    return env


def forward_subprocess(model: Path, data: Path, args, malloc: str = "") -> float:
    """The pure forward (as :func:`pure_forward`) timed in a fresh process set up as test.py sets itself up."""
    cmd = [sys.executable, "-m", "bench.bench_test", "--forward-only", str(model), "--data", str(data),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(args, malloc))
    found = re.search(r"^forward: ([0-9.]+) s$", proc.stdout, re.M)
    if proc.returncode != 0 or not found:
        sys.exit(f"the forward subprocess failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return float(found.group(1))


# Runs a command and prints its peak RSS. ru_maxrss survives execve: a child started straight from this (large)
# process would report this process's RSS as its own peak, so the command is started from this small one.
PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
print(f"peak-rss-kib: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def run_test(model_paths, data: Path, prefix: Path, args, malloc: str = "") -> dict:
    cmd = [sys.executable, str(ROOT / "test.py"), "--tta", *map(str, model_paths), "--data-dir", str(data),
           "--output-prefix", str(prefix), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--device", args.device]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], capture_output=True, text=True, cwd=ROOT,
                          env=_env(args, malloc))
    wall = time.perf_counter() - t0
    out = proc.stdout
    if proc.returncode != 0:
        sys.exit(f"test.py failed:\n{(out + proc.stderr)[-3000:]}")
    peak = int(re.search(r"^peak-rss-kib: (\d+)$", proc.stderr, re.M).group(1))
    timing = re.search(r"^time: (.*)$", out, re.M).group(1)
    return {"wall": wall, "rss_mib": peak / 1024, "timing": timing}


def main(argv=None) -> int:
    args = parse_args(argv)
    from datasets import kaggle
    from tgs import runtime

    runtime.setup_cpu(args.threads)  # as test.py does
    data = dataset(args)
    images = kaggle.load_test(data).images  # also warms the PNG cache test.py reads
    if args.forward_only:
        print(f"forward: {pure_forward(Path(args.forward_only), images, args):.3f} s")
        return 0
    n = len(images)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = small_models(tmp, 1, args.width, args.mode, args.size, "small")
        tiny = small_models(tmp, max(1, args.models), args.memory_width, "resize", args.memory_size, "tiny")
        print(f"{n} images; timing: small UNet (width {args.width}, {args.mode} 101->{args.size}); memory: "
              f"{args.models} UNets (width {args.memory_width}, resize 101->{args.memory_size}); batch "
              f"{args.batch_size}, {args.threads} thread(s), {args.device}", flush=True)
        total_in, forward_in = in_process(small, data, tmp / "inproc", args)
        before = forward_subprocess(small[0], data, args)
        one = run_test(small, data, tmp / "one", args)
        after = forward_subprocess(small[0], data, args)
        forward = min(before, after)
        if args.glibc_defaults:
            forward_glibc = forward_subprocess(small[0], data, args, malloc="default")
            one_glibc = run_test(small, data, tmp / "glibc", args, malloc="default")
        mem_one = run_test(tiny[:1], data, tmp / "mem1", args)
        mem_many = run_test(tiny, data, tmp / "memN", args)

    over_in = (total_in - forward_in) / forward_in
    over_wall = (one["wall"] - forward) / forward
    print()
    print(f"| {n} test images, flip TTA | seconds | overhead vs forward | peak RSS MiB |")
    print("|---|---|---|---|")
    print(f"| (a) test.py main(), small model: total | {total_in:.1f} | {over_in:+.1%} | |")
    print(f"| (a) of which model forward calls | {forward_in:.1f} | | |")
    print(f"| (b) pure model forward, own process ({before:.1f} s before, {after:.1f} s after) | {forward:.1f} | | |")
    print(f"| (b) test.py subprocess, small model: wall clock | {one['wall']:.1f} | {over_wall:+.1%} | "
          f"{one['rss_mib']:.0f} |")
    if args.glibc_defaults:
        print(f"| (b) with glibc malloc defaults: pure model forward | {forward_glibc:.1f} | | |")
        print(f"| (b) with glibc malloc defaults: test.py wall clock | {one_glibc['wall']:.1f} | "
              f"{(one_glibc['wall'] - forward_glibc) / forward_glibc:+.1%} | {one_glibc['rss_mib']:.0f} |")
    print(f"| test.py, 1 tiny model | {mem_one['wall']:.1f} | | {mem_one['rss_mib']:.0f} |")
    print(f"| test.py, {args.models} tiny models | {mem_many['wall']:.1f} | | {mem_many['rss_mib']:.0f} |")
    print()
    print(f"test.py phases, small model: {one['timing']}")
    print(f"test.py phases, {args.models} tiny models: {mem_many['timing']}")
    print(f"overhead over the model forward: {over_in:+.1%} within one run (a), {over_wall:+.1%} for the subprocess "
          f"against a separate forward (b) (target <= 15%)")
    print(f"peak memory, {args.models} models / 1 model: {mem_many['rss_mib'] / mem_one['rss_mib']:.2f}x "
          f"(target <= 1.2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
