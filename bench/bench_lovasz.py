"""Benchmark: batched Lovasz hinge (losses.lovasz) against a per-image Python loop of Berman's lovasz_hinge_flat.

Forward + backward of the mean per-image elu+1 Lovasz hinge at batch 32 of 101x101 maps (the default), on the
CPU and on CUDA when present; the symmetric variant too (the loop sorts twice per image, the batched version
once per batch). The batched version is timed with torch.argsort and with its default sort (numpy's SIMD
argsort on the CPU). Values and gradients are checked to agree with the loop before timing.

    .venv/bin/python -m bench.bench_lovasz [--batch 32] [--size 101] [--iters 5] [--rounds 7] [--threads N]
                                           [--devices cpu,cuda]

Prints one row per (device, variant): median ms/iter of each, and the speed-up of the default over the loop.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from losses.lovasz import lovasz_hinge


# -- the per-image loop (Berman's reference with elu+1; the same as the tests' reference) ---------------------------
def _ref_lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def _ref_flat(logits, labels):
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    grad = _ref_lovasz_grad(labels[perm])
    return torch.dot(F.elu(errors_sorted) + 1, grad)


def loop_lovasz(logits, labels):
    return torch.stack([_ref_flat(x.reshape(-1), y.reshape(-1)) for x, y in zip(logits, labels)]).mean()


def loop_symmetric(logits, labels):
    return 0.5 * (loop_lovasz(logits, labels) + loop_lovasz(-logits, 1 - labels))


def batched_lovasz(logits, labels, sort_backend="auto"):
    return lovasz_hinge(logits, labels, sort_backend=sort_backend)


def batched_symmetric(logits, labels, sort_backend="auto"):
    return lovasz_hinge(logits, labels, symmetric=True, sort_backend=sort_backend)


VARIANTS = {"lovasz": (loop_lovasz, batched_lovasz), "symmetric": (loop_symmetric, batched_symmetric)}


# -- timing --------------------------------------------------------------------------------------------------------
def _inputs(batch, size, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g)
    y = (torch.rand(batch, 1, size, size, generator=g) < torch.rand(batch, 1, 1, 1, generator=g)).float()
    y[: batch // 8] = 0.0  # some empty images, as in TGS
    return x.to(device), y.to(device)


def _step(fn, x, y):
    x.grad = None
    loss = fn(x, y)
    loss.backward()
    return loss


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_all(fns, x, y, iters, rounds, device):
    """Median ms/iter of each function, measured in alternating rounds so that all see the same machine load."""
    for fn in fns:  # warm-up
        for _ in range(2):
            _step(fn, x, y)
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, acc in zip(fns, times):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                _step(fn, x, y)
            _sync(device)
            acc.append((time.perf_counter() - t0) / iters * 1e3)
    return [statistics.median(acc) for acc in times]


def _check(loop, batched, x, y):
    a = x.detach().clone().requires_grad_()
    b = x.detach().clone().requires_grad_()
    la, lb = _step(loop, a, y), _step(batched, b, y)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=101)
    ap.add_argument("--iters", type=int, default=5, help="iterations per timed round")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds; the median round is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}, "
          f"{args.size}x{args.size}, forward+backward, median of {args.rounds} rounds of {args.iters} iters")
    header = (
        f"{'device':<7} {'variant':<10} {'loop ms':>9} {'batched torch.sort ms':>22} {'batched default ms':>19} "
        f"{'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print(f"{'cuda':<7} (not available)")
            continue
        device = torch.device(name)
        x, y = _inputs(args.batch, args.size, device)
        x.requires_grad_()
        for variant, (loop, batched) in VARIANTS.items():
            with_torch_sort = functools.partial(batched, sort_backend="torch")
            fns = [loop, with_torch_sort] + ([batched] if device.type == "cpu" else [])
            for fn in fns[1:]:
                _check(loop, fn, x, y)
            ms = _time_all(fns, x, y, args.iters, args.rounds, device)
            default = ms[-1]
            cells = f"{ms[0]:>9.2f} {ms[1]:>22.2f} " + (f"{ms[2]:>19.2f}" if len(ms) == 3 else f"{'(same)':>19}")
            print(f"{name:<7} {variant:<10} {cells} {ms[0] / default:>8.1f}x")
    print("default sort: numpy argsort on the CPU, torch.argsort elsewhere; speed-up = loop / default")
    return 0


if __name__ == "__main__":
    sys.exit(main())
