#!/usr/bin/env python
"""Training throughput: a real epoch (DataLoader workers, augmentation, padding, loss, optimiser) next to the same
number of model-only steps on tensors already in memory. The ratio shows whether the data pipeline keeps up.

    python -m bench.bench_train                         # light config: resnet34, pad 128, OC in the centre
    python -m bench.bench_train --images 512 --workers 2 --device cuda -- --basenet senet154 --input-upsample 2

Arguments after ``--`` go to train.py's option parser (they override the light config). Prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch  # noqa: E402

import tgs.compat  # noqa: F401
from cli import train as train_cli  # noqa: E402
from datasets.synthetic import write_dataset  # noqa: E402
from engine import distributed, trainer  # noqa: E402

LIGHT = ["--basenet", "resnet34", "--input-upsample", "1", "--oc", "center", "--loss", "deep", "--loss-on-center"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=192, help="training images per epoch")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tgs-bench-train-") as tmp:
        n_total = int(a.images / 0.9) + 1
        write_dataset(Path(tmp) / "data", n_train=n_total, n_test=1, seed=0)
        light = [f for f in LIGHT if not ("--resize" in extra and f == "--loss-on-center")]
        cfg = train_cli.parse(["--data-dir", str(Path(tmp) / "data"), "--log-dir", str(Path(tmp) / "run"),
                              "--batch-size", str(a.batch_size), "--dataload-workers-nums", str(a.workers),
                              "--device", a.device, "--max-epochs", "1", *light, *extra])
        info = distributed.setup(cfg.run.device)
        ctx = trainer.setup(cfg, info)
        batches = len(ctx.train_loader)
        n = batches * a.batch_size

        trainer.train_one_epoch(ctx, 0)  # warm-up (allocations, worker start-up code paths)
        sync(info.device)
        t = time.perf_counter()
        trainer.train_one_epoch(ctx, 1)
        sync(info.device)
        epoch_s = time.perf_counter() - t

        images = torch.randint(0, 256, (a.batch_size, 1, 101, 101), dtype=torch.uint8, device=info.device)
        masks = torch.rand(a.batch_size, 1, 101, 101, device=info.device) > 0.6
        ctx.model.train()

        def step():
            trainer.train_step(ctx, images, masks)  # the epoch's own step (amp, channels_last, scaler)

        step()
        sync(info.device)
        t = time.perf_counter()
        for _ in range(batches):
            step()
        sync(info.device)
        model_s = time.perf_counter() - t

    print(f"\n{cfg.model.basenet}, {ctx.spec.mode} {ctx.spec.size}, batch {a.batch_size}, {batches} batches, "
          f"device {info.device}, {a.workers} loader workers, torch threads {torch.get_num_threads()}")
    print(f"{'what':34s} {'seconds':>8s} {'images/s':>9s}")
    print(f"{'training epoch (loader + augment)':34s} {epoch_s:8.2f} {n / epoch_s:9.1f}")
    print(f"{'model-only steps (same work)':34s} {model_s:8.2f} {n / model_s:9.1f}")
    print(f"{'ratio (target >= 0.9)':34s} {model_s / epoch_s:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
