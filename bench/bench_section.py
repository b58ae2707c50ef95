"""section.py's cost over the bare model: a 2D SEG-Y section and a 3D SEG-Y volume through one small model on the
CPU, against the model's forward passes (with the flip) over exactly the same windows.

    python bench/bench_section.py                       # 1000 x 2000 section, 100 x 300 x 400 volume
    python bench/bench_section.py --inlines 20 --traces 500 --samples 300    # smaller, quicker

(a) section.py's work, timed inside its process (engine.section.run: reading, clipping, tiling, the models,
    blending, the mask, the pictures, writing), the seconds of its model's forward calls within that same run (so
    that both figures see the same load on a shared machine), and its peak memory (RSS);
(b) the bare forward: model(x) and model(flip(x)) over the same windows, inputs prepared outside the timed region,
    in a process of its own with section.py's process settings (tgs.runtime.setup_cpu);
the overhead is (a) over its model calls, and (a) over (b) (noisier: two processes at different moments). The
volume is also run with a quarter of its inlines: memory should not grow with the volume's size (one line in
memory at a time).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1000, help="2D section: samples (depth)")
    p.add_argument("--cols", type=int, default=2000, help="2D section: traces")
    p.add_argument("--inlines", type=int, default=100)
    p.add_argument("--traces", type=int, default=300, help="volume: crosslines per inline")
    p.add_argument("--samples", type=int, default=400, help="volume: samples per trace")
    p.add_argument("--width", type=int, default=4, help="encoder width of the small UNet")
    p.add_argument("--size", type=int, default=64, help="its input side (resize)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", nargs=3, metavar=("MODEL", "INPUT", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--forward", nargs=2, metavar=("MODEL", "WINDOWS"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def amplitudes(shape: tuple, seed: int) -> np.ndarray:
    """Smooth random float32 amplitudes (layered: correlated along the last axis's neighbours)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)


def write_inputs(folder: Path, args) -> dict:
    from datasets import segy

    files = {"2d": folder / "section.sgy", "3d": folder / "volume.sgy", "3d-quarter": folder / "quarter.sgy"}
    segy.write_array(files["2d"], amplitudes((args.cols, args.rows), 0))
    volume = amplitudes((args.inlines, args.traces, args.samples), 1)
    segy.write_array(files["3d"], volume)
    segy.write_array(files["3d-quarter"], volume[: max(1, args.inlines // 4)])
    return files


def child(args) -> int:
    """One section.py run in this process: prints its seconds, the seconds its model's forward calls took inside
    it (measured in the same run, so both see the same machine load) and this process's peak RSS as JSON."""
    import io
    from contextlib import redirect_stdout

    from bench.bench_test import timed_models
    from engine import section

    opts = section.SectionOptions(models=(args.child[0],), input=args.child[1], out=args.child[2], device="cpu",
                                  threads=args.threads, batch_size=args.batch_size)
    with timed_models() as timed:
        t0 = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            section.run(opts)
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "model_seconds": sum(m.seconds for m in timed),
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def forward(args) -> int:
    """The bare forward over saved windows in this process, with section.py's process settings
    (tgs.runtime.setup_cpu): prints its seconds and peak RSS as JSON."""
    from bench.bench_test import pure_forward
    from tgs import runtime

    runtime.setup_cpu(args.threads)
    windows = np.load(args.forward[1])
    seconds = pure_forward(Path(args.forward[0]), windows, argparse.Namespace(device="cpu",
                                                                              batch_size=args.batch_size))
    print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def run_child(args, *flag) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *map(str, flag),
           "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    if r.returncode:
        raise SystemExit(f"section run failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}


def same_windows(path: Path) -> np.ndarray:
    """Every window section.py cuts from the file's lines (inlines; the 2D line), as uint8 (N, 101, 101)."""
    from datasets import segy
    from engine.section_tiles import Tiling, estimate_clip

    out = []
    with segy.open_segy(path) as v:
        clip = estimate_clip(v.sample_traces(500), (1.0, 99.0))
        for k in range(v.lines("inline")):
            grey = clip.apply(v.line("inline", k))
            out.append(Tiling(*grey.shape).windows(grey))
    return np.concatenate(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    if args.forward:
        return forward(args)
    from bench.bench_test import small_models

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = small_models(tmp, 1, args.width, "resize", args.size, "small")[0]
        print(f"small UNet (width {args.width}, resize 101->{args.size}), flip TTA, {args.threads} thread(s), "
              f"batch {args.batch_size}; writing the inputs ...", flush=True)
        files = write_inputs(tmp, args)
        for kind, path in files.items():
            windows = same_windows(path)
            np.save(tmp / "windows.npy", windows)
            bare = run_child(args, "--forward", model, tmp / "windows.npy")
            run = run_child(args, "--child", model, path, tmp / f"out-{kind}")
            size = path.stat().st_size / 2**20
            rows.append((kind, size, len(windows), bare["seconds"], run["model_seconds"], run["seconds"],
                         bare["peak_mib"], run["peak_mib"]))
            print(f"  {kind}: {len(windows)} windows, bare forward {bare['seconds']:.1f} s, section.py "
                  f"{run['seconds']:.1f} s of which the model {run['model_seconds']:.1f} s", flush=True)
    print()
    print("| input | file MiB | windows | (b) bare forward s | section.py s | its model calls s | overhead over its "
          "model calls | over (b) | peak RSS MiB: (b), all windows in memory | section.py |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind, size, n, bare, inside, total, bare_peak, peak in rows:
        print(f"| {kind} | {size:.0f} | {n} | {bare:.1f} | {total:.1f} | {inside:.1f} | {total / inside - 1:+.1%} | "
              f"{total / bare - 1:+.1%} | {bare_peak:.0f} | {peak:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
