"""Where the folds run at the same time (:func:`places`): one per GPU, N shares of the CPU cores, the cluster's
queue, or this process."""
from __future__ import annotations

import os

from engine.ensemble.options import EnsembleOptions
from engine.jobs import Place


def visible_gpus(spec: str, device: str | None) -> list[str]:
    """GPU ids to run folds on in parallel (empty: none, or the device asked for is not 'auto'/'cuda')."""
    if spec == "none" or (device is not None and device not in ("auto", "cuda")):
        return []
    if spec != "auto":
        return [g.strip() for g in spec.split(",") if g.strip()]
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [g.strip() for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def places(opts: EnsembleOptions, count: int) -> list[Place]:
    """Where ``count`` folds run, one job per place at a time.

    local: GPUs round-robin when 2+ are used (each job sees only its own: CUDA_VISIBLE_DEVICES), else ``parallel``
    processes sharing the cores (cores/N threads each unless ``threads`` is given), else one; slurm: ``parallel``
    jobs in the queue at once (default: every fold); debug: this process. A place's ``flags`` are option
    overrides of its steps, as (name, value) pairs."""
    if opts.executor == "debug":
        return [Place("this process")]
    if opts.executor == "slurm":
        return [Place(f"Slurm job {i + 1}") for i in range(min(opts.parallel or count, count))]
    # submitit hides every GPU from a local job unless told; a job of its own keeps this process's view
    own = {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    gpus = visible_gpus(opts.gpus, opts.shared.get("device"))
    n = opts.parallel or (len(gpus) if len(gpus) >= 2 else 1)
    if n < 2:
        return [Place("this machine", own)]
    if gpus:
        return [Place(f"GPU {gpus[i % len(gpus)]}", {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}, "cuda")
                for i in range(n)]
    threads = opts.shared.get("threads") or max(1, (os.cpu_count() or 1) // n)
    flags = () if "threads" in opts.shared else (("threads", threads),)
    return [Place(f"process {i + 1} ({threads} thread{'s' if threads != 1 else ''})",
                  {**own, "OMP_NUM_THREADS": str(threads)}, None, flags) for i in range(n)]


def overrides(place: Place) -> dict:
    """The options a place sets for its folds' steps: its device and its own (threads)."""
    return {**({"device": place.device} if place.device else {}), **dict(place.flags)}
