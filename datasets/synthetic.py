"""A synthetic TGS salt dataset in Kaggle's exact layout, for tests, benchmarks and `make demo`.

    python -m datasets.synthetic --out DIR --train 4000 --test 18000 --seed 0

What it draws (vectorised over the whole batch):

- sediment: horizontal reflectors. A random sparse reflectivity series per image is convolved with a Ricker
  wavelet and sampled along gently folded, tilted horizons (each column shifted by a smooth lateral function);
- salt: bodies cut from a smooth random field with a depth trend (domes rise from below), filling a coverage
  drawn per image from 0 to 100%; inside, the reflectors give way to weak, chaotic texture, and the body's
  boundary is a strong reflector (a bright rim);
- noise, and a random brightness and contrast per image;
- about 39% empty masks (more of them at shallow depths), some flat single-valued images (empty masks),
  some masks saved as 16-bit PNGs (0/65535) and some images saved in L mode rather than RGB, like the real files.

It writes ``train/images``, ``train/masks``, ``test/images``, ``train.csv`` (RLE from the masks),
``depths.csv`` (train and test ids, shuffled) and ``sample_submission.csv`` (test ids, ``1 1`` masks).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from tgs import rle
from tgs.errors import UserError, cli
from tgs.io import atomic_open
from tgs.png import default_workers

SIZE = 101
EMPTY_FRACTION = 0.39
FLAT_FRACTION = 0.02
L_MODE_FRACTION = 0.15
MASK16_FRACTION = 0.15
DEPTH_RANGE = (51, 959)


@dataclass
class Synthetic:
    ids: np.ndarray
    images: np.ndarray  # (N, 101, 101) uint8
    masks: np.ndarray  # (N, 101, 101) bool
    depths: np.ndarray  # (N,) int
    flat: np.ndarray  # (N,) bool


def make_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct ids of 10 lower-case hex characters."""
    values = np.unique(rng.integers(0, 16 ** 10, size=int(n * 1.1) + 16, dtype=np.int64))
    values = rng.permutation(values)[:n]
    if values.size < n:  # astronomically unlikely
        return make_ids(rng, n)
    return np.char.mod("%010x", values).astype(str)


def _lowpass(rng: np.random.Generator, n: int, corr: np.ndarray) -> np.ndarray:
    """Smooth random fields (n, 101, 101) with a Gaussian correlation length ``corr`` (pixels) per image."""
    white = rng.standard_normal((n, SIZE, SIZE)).astype(np.float32)
    f = np.fft.fftfreq(SIZE).astype(np.float32)
    k2 = f[:, None] ** 2 + f[None, :] ** 2
    gain = np.exp(-2.0 * (np.pi ** 2) * k2[None] * (corr[:, None, None] ** 2))
    field = np.fft.ifft2(np.fft.fft2(white) * gain).real.astype(np.float32)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True) + 1e-6
    return field


def _ricker(points: int, width: float) -> np.ndarray:
    t = np.arange(points) - (points - 1) / 2
    a = (t / width) ** 2
    return (1 - 2 * a) * np.exp(-a)


def _sediment(rng: np.random.Generator, n: int) -> np.ndarray:
    """Layered reflectors: a reflectivity trace per image sampled along folded, tilted horizons."""
    length = 3 * SIZE
    spikes = rng.standard_normal((n, length)) * (rng.random((n, length)) < 0.25)
    spikes += 0.3 * rng.standard_normal((n, length))
    wavelet = _ricker(21, rng.uniform(1.5, 3.0))
    trace = ndimage.convolve1d(spikes, wavelet, axis=1, mode="wrap").astype(np.float32)

    x = np.arange(SIZE, dtype=np.float32)[None, None, :]
    y = np.arange(SIZE, dtype=np.float32)[None, :, None]
    amp = rng.uniform(0, 8, (n, 1, 1)).astype(np.float32)
    wavelength = rng.uniform(60, 250, (n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    tilt = rng.uniform(-0.25, 0.25, (n, 1, 1)).astype(np.float32)
    depth = y + amp * np.sin(2 * np.pi * x / wavelength + phase) + tilt * x + SIZE  # inside [0, 3*SIZE)
    depth = np.clip(depth, 0, length - 1.001)
    lo = np.floor(depth).astype(np.int64)
    w = depth - lo
    rows = np.arange(n)[:, None, None]
    return (1 - w) * trace[rows, lo] + w * trace[rows, lo + 1]


def _salt_masks(rng: np.random.Generator, n: int, depths: np.ndarray) -> np.ndarray:
    """Salt bodies from a smooth field with a depth trend; coverage 0 for the empty ones."""
    p_empty = np.clip(EMPTY_FRACTION + 0.3 * (0.5 - (depths - DEPTH_RANGE[0]) / np.ptp(DEPTH_RANGE)), 0.05, 0.95)
    empty = rng.random(n) < p_empty
    field = _lowpass(rng, n, rng.uniform(8, 20, n).astype(np.float32))
    trend = rng.uniform(0.0, 3.0, (n, 1, 1)).astype(np.float32)
    y = np.linspace(-1, 1, SIZE, dtype=np.float32)[None, :, None]
    field = field + trend * y  # salt tends to come up from below
    coverage = np.where(rng.random(n) < 0.05, 1.0, rng.beta(0.9, 1.4, n))
    coverage = np.clip(coverage, 0.004, 1.0)
    flat = field.reshape(n, -1)
    k = np.clip(((1 - coverage) * flat.shape[1]).astype(np.int64), 0, flat.shape[1] - 1)
    thr = np.take_along_axis(np.sort(flat, axis=1), k[:, None], axis=1)[:, 0]
    masks = field >= thr[:, None, None]
    masks[coverage >= 1.0] = True
    masks[empty] = False
    return masks


def generate(n: int, rng: np.random.Generator, ids: np.ndarray | None = None) -> Synthetic:
    """Images, masks and depths of ``n`` synthetic samples (ids drawn here unless given)."""
    ids = make_ids(rng, n) if ids is None else np.asarray(ids)
    depths = rng.integers(DEPTH_RANGE[0], DEPTH_RANGE[1] + 1, n)
    masks = _salt_masks(rng, n, depths)
    sediment = _sediment(rng, n)
    sediment /= sediment.std(axis=(1, 2), keepdims=True) + 1e-6
    chaos = 0.35 * _lowpass(rng, n, rng.uniform(1.0, 2.5, n).astype(np.float32))
    m = masks.astype(np.float32)
    soft = ndimage.gaussian_filter(m, sigma=(0, 1.0, 1.0))
    gy, gx = np.gradient(soft, axis=(1, 2))  # in-plane only: never mix neighbouring images of the batch
    rim = 4.0 * np.hypot(gy, gx)
    rim_gain = rng.uniform(0.8, 2.0, (n, 1, 1)).astype(np.float32)
    img = sediment * (1 - soft) + chaos * soft + rim_gain * rim
    img += rng.uniform(0.1, 0.4, (n, 1, 1)).astype(np.float32) * rng.standard_normal(img.shape).astype(np.float32)
    contrast = rng.uniform(18, 45, (n, 1, 1))
    brightness = rng.uniform(95, 150, (n, 1, 1))
    images = np.clip(img * contrast + brightness, 0, 255).round().astype(np.uint8)

    flat = rng.random(n) < FLAT_FRACTION
    images[flat] = rng.integers(0, 256, int(flat.sum()), dtype=np.uint8)[:, None, None]
    masks[flat] = False
    return Synthetic(ids, images, masks, depths, flat)


def _write_pngs(folder: Path, ids, arrays, transform) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def work(i: int) -> None:
        if not cv2.imwrite(str(folder / f"{ids[i]}.png"), transform(i, arrays[i])):
            raise OSError(f"could not write {folder / (ids[i] + '.png')}")

    with ThreadPoolExecutor(default_workers()) as pool:
        list(pool.map(work, range(len(ids))))


BLOCK = 2048  # images generated at a time: bounds the float temporaries to a few hundred MB


def write_dataset(out: str | os.PathLike, n_train: int, n_test: int, seed: int = 0) -> dict:
    """Write a complete synthetic dataset in Kaggle's layout; returns a small summary."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    ids = make_ids(rng, total)
    l_mode = rng.random(total) < L_MODE_FRACTION
    mask16 = rng.random(total) < MASK16_FRACTION
    depths = np.zeros(total, np.int64)
    train_rles: list[str] = []
    empty = flat = salt_pixels = 0

    def image_png(i, img):
        return img if l_mode[i] else np.repeat(img[..., None], 3, axis=2)

    def mask_png(i, m):
        return (m.astype(np.uint16) * 65535) if mask16[i] else (m.astype(np.uint8) * 255)

    for first in range(0, total, BLOCK):
        block = generate(min(BLOCK, total - first), rng, ids[first:first + BLOCK])
        depths[first:first + len(block.ids)] = block.depths
        flat += int(block.flat.sum())
        n_tr = max(0, min(len(block.ids), n_train - first))  # how many of this block are training images
        at = np.arange(first, first + len(block.ids))
        if n_tr:
            tr = slice(0, n_tr)
            _write_pngs(out / "train" / "images", block.ids[tr], block.images[tr], lambda i, x: image_png(at[i], x))
            _write_pngs(out / "train" / "masks", block.ids[tr], block.masks[tr], lambda i, x: mask_png(at[i], x))
            train_rles += rle.encode(block.masks[tr])
            empty += int((~block.masks[tr].any(axis=(1, 2))).sum())
            salt_pixels += int(block.masks[tr].sum())
        if n_tr < len(block.ids):
            te = slice(n_tr, None)
            _write_pngs(out / "test" / "images", block.ids[te], block.images[te],
                        lambda i, x: image_png(at[n_tr + i], x))

    with atomic_open(out / "train.csv", "w", newline="") as fh:
        pd.DataFrame({"id": ids[:n_train], "rle_mask": train_rles}).to_csv(fh, index=False)
    order = rng.permutation(total)
    with atomic_open(out / "depths.csv", "w", newline="") as fh:
        pd.DataFrame({"id": ids[order], "z": depths[order]}).to_csv(fh, index=False)
    with atomic_open(out / "sample_submission.csv", "w", newline="") as fh:
        pd.DataFrame({"id": ids[n_train:], "rle_mask": "1 1"}).to_csv(fh, index=False)
    (out / "train" / "images").mkdir(parents=True, exist_ok=True)
    (out / "train" / "masks").mkdir(parents=True, exist_ok=True)
    (out / "test" / "images").mkdir(parents=True, exist_ok=True)
    return {
        "train": n_train,
        "test": n_test,
        "empty_fraction": empty / n_train if n_train else float("nan"),
        "flat_images": flat,
        "mean_coverage": salt_pixels / (n_train * SIZE * SIZE) if n_train else float("nan"),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="dataset folder to create (Kaggle's layout)")
    p.add_argument("--train", type=int, default=4000, help="training images (default 4000, as in the competition)")
    p.add_argument("--test", type=int, default=18000, help="test images (default 18000, as in the competition)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="write into a folder that already has files")
    return p.parse_args(argv)


@cli
def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.train < 0 or args.test < 0:
        raise UserError("--train and --test must be >= 0")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise UserError(f"--out {out} is not empty; pass --force to write into it anyway")
    summary = write_dataset(out, args.train, args.test, args.seed)
    print(f"wrote {summary['train']} train and {summary['test']} test images to {out} "
          f"(empty masks {summary['empty_fraction']:.1%}, mean coverage {summary['mean_coverage']:.1%}, "
          f"flat images {summary['flat_images']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
