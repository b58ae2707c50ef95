"""Throughput and peak memory of the salt UNet: forward (eval, no_grad) and forward+backward (train mode).

Grid: models x {fp32, bf16 autocast} x {channels_last off, on} on CUDA when present, else the CPU.
Each (model, dtype, memory format) runs in a fresh subprocess so that peak memory is its own:

- CUDA: ``torch.cuda.max_memory_allocated`` (reset before each mode), i.e. tensors held by the caching allocator;
- CPU: the peak RSS (``VmHWM``) of that subprocess (a high-water mark, cannot be reset):
  the "peak" column is the peak RSS minus the RSS right after the model was built (weights and libraries
  excluded), measured after the forward runs for "fwd" and after forward+backward for "fwd+bwd" (the larger of
  the two, since the mark never goes down).

Examples::

    python -m bench.bench_models                                  # recipe + light, batch 32, 128 px
    python -m bench.bench_models --batch-size 4 --iters 1 --warmup 0   # a quick look on a small CPU
    python -m bench.bench_models --models light,resnet18 --dtypes bf16 --channels-last on

Model names: ``recipe`` (SENet154, OC blocks, x2 input up-sampling), ``light`` (resnet34, OC, no up-sampling),
or any encoder name accepted by ``models.build_model`` (built with the recipe's decoder and no up-sampling).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch  # noqa: E402

import tgs.compat  # noqa: F401  (before timm / torchvision)

ROOT = Path(__file__).resolve().parents[1]

PRESETS = {
    "recipe": dict(encoder="senet154", input_upsample=2),
    "light": dict(encoder="resnet34", input_upsample=1),
}


def _config(name: str) -> dict:
    return PRESETS.get(name, dict(encoder=name, input_upsample=1))


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mib() -> float:
    """This process's peak RSS, MiB: VmHWM of /proc (reset by execve). Not ru_maxrss: that one survives execve,
    so a worker would report its (larger) parent's RSS at fork time as its own peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(spec: dict) -> dict:
    """One (model, dtype, memory format) measurement; returns a row per mode."""
    import models

    torch.manual_seed(0)
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = models.build_model(**_config(spec["model"])).to(device)
    fmt = torch.channels_last if spec["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt)
    n, size = spec["batch_size"], spec["size"]
    x = torch.rand(n, 1, size, size, device=device).contiguous(memory_format=fmt)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")
    params = sum(p.numel() for p in model.parameters())
    base_rss = _rss_mib()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad(), autocast:
            model(x)

    def forward_backward():
        with autocast:
            out = model(x)
            loss = out["logits"].mean() + sum(a.mean() for a in out["aux"]) + out["image_logit"].mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    rows = []
    for mode, step, train in (("fwd", forward, False), ("fwd+bwd", forward_backward, True)):
        model.train(train)
        for _ in range(spec["warmup"]):
            step()
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(spec["iters"]):
            step()
        sync()
        elapsed = time.perf_counter() - t0
        # the high-water mark is updated lazily by the kernel: it can trail the current RSS a little
        peak = (torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda
                else max(0.0, max(_peak_rss_mib(), _rss_mib()) - base_rss))
        rows.append(dict(model=spec["model"], encoder=model.config.encoder, device=device.type,
                         dtype=spec["dtype"], channels_last=spec["channels_last"], mode=mode, batch=n, size=size,
                         iters=spec["iters"], params_m=params / 1e6, images_s=n * spec["iters"] / elapsed,
                         ms_iter=1000 * elapsed / spec["iters"], peak_mib=peak))
    return {"rows": rows}


def print_table(rows: list[dict], memory_note: str) -> None:
    head = ["model", "encoder", "device", "dtype", "ch_last", "mode", "batch", "size", "img/s", "ms/iter",
            "peak MiB"]
    lines = [[r["model"], r["encoder"], r["device"], r["dtype"], "on" if r["channels_last"] else "off", r["mode"],
              str(r["batch"]), str(r["size"]), f"{r['images_s']:.2f}", f"{r['ms_iter']:.0f}",
              f"{r['peak_mib']:.0f}"] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
    print(f"peak: {memory_note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="recipe,light", help="comma list: recipe, light or encoder names")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=128, help="input side (a multiple of 32)")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per mode")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list of fp32, bf16 (autocast)")
    parser.add_argument("--channels-last", choices=("both", "on", "off"), default="both")
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if set(dtypes) - {"fp32", "bf16"}:
        parser.error(f"--dtypes takes fp32 and/or bf16, got {args.dtypes}")
    layouts = {"both": [False, True], "on": [True], "off": [False]}[args.channels_last]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        for dtype in dtypes:
            for channels_last in layouts:
                spec = dict(model=name, device=device, dtype=dtype, channels_last=channels_last,
                            batch_size=args.batch_size, size=args.size, iters=args.iters, warmup=args.warmup,
                            threads=args.threads)
                print(f"... {name} {dtype} channels_last={channels_last}", file=sys.stderr, flush=True)
                proc = subprocess.run([sys.executable, "-m", "bench.bench_models", "--worker", json.dumps(spec)],
                                      cwd=ROOT,
                                      capture_output=True, text=True)
                result = next((line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
                if proc.returncode or result is None:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    print(f"    failed: {tail}", file=sys.stderr)
                    continue
                rows.extend(json.loads(result)["rows"])
    note = ("torch.cuda.max_memory_allocated" if device.startswith("cuda") else
            "CPU: peak RSS (VmHWM) of a fresh process minus its RSS after building the model (high-water mark: "
            "fwd+bwd includes fwd)")
    print_table(rows, note)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
