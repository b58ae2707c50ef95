#!/usr/bin/env python
"""Foundation benchmarks: RLE encode/decode, the metric, and PNG loading, on a Kaggle-sized synthetic set.

    python -m bench.bench_foundation                      # makes a 4000 + 18000 synthetic set in a temp folder
    python -m bench.bench_foundation --data DATA          # reuses a dataset (synthetic or real)

Prints a table (best of --repeat runs). Targets on one core: encode of 18000 masks < 0.3 s, metric over 4000 < 0.5 s,
PNG loading > 3000 images/s. Nothing here is asserted by the tests.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from bench import dataset
from datasets import kaggle
from tgs import metric, png, rle


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder in Kaggle's layout (default: generate 4000 + 18000 images)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with dataset(args.data, 4000, 18000) as data:
        return measure(args, data)


def measure(args, data: str) -> int:
    layout = kaggle.Layout.of(data)
    train_ids = kaggle.read_train_csv(layout.train_csv)["id"].to_numpy(str)
    test_ids = kaggle.read_sample_submission(layout.sample_submission)
    rles = kaggle.read_train_csv(layout.train_csv)["rle_mask"].tolist()
    masks = rle.decode(rles)
    masks18k = np.resize(masks, (18000, 101, 101))  # the training masks repeated to a test-sized batch
    rng = np.random.default_rng(0)
    pred = masks ^ (rng.random(masks.shape) < 0.01)

    rows = []

    def add(name, n, seconds, target=""):
        rows.append((name, n, seconds, n / seconds, target))

    add("RLE encode", 18000, best_of(lambda: rle.encode(masks18k), args.repeat), "< 0.3 s")
    add("RLE decode", len(rles), best_of(lambda: rle.decode(rles), args.repeat))
    add("metric", len(masks), best_of(lambda: metric.score(pred, masks), args.repeat), "< 0.5 s")
    n_png = len(train_ids) + len(test_ids)

    def load_all(workers):
        png.read_pngs(layout.train_images, train_ids, "image", workers)
        png.read_pngs(layout.test_images, test_ids, "image", workers)

    add("PNG decode, 1 thread", n_png, best_of(lambda: load_all(1), args.repeat), "> 3000 img/s")
    w = png.default_workers()
    add(f"PNG decode, {w} threads", n_png, best_of(lambda: load_all(w), args.repeat))
    kaggle.load_train(data, cache=True)
    kaggle.load_test(data, cache=True)  # warm the cache
    add("cached load_train + load_test", n_png,
        best_of(lambda: (kaggle.load_train(data, cache=True), kaggle.load_test(data, cache=True)), args.repeat))

    print(f"\n{'operation':32s} {'items':>7s} {'seconds':>9s} {'items/s':>10s}  target   (cpu cores: {os.cpu_count()})")
    for name, n, s, rate, target in rows:
        print(f"{name:32s} {n:7d} {s:9.3f} {rate:10.0f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
