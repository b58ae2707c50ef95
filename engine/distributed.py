"""Distributed mode from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

``python train.py ...`` runs one process; ``torchrun --nproc_per_node=2 train.py ...`` runs DDP with NCCL on GPUs
and gloo on the CPU; multi-node works through torchrun's rendezvous in the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tgs.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(flag: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the process's GPU when CUDA is available, else the CPU; ``cpu``; ``cuda``; ``cuda:N``."""
    if flag == "auto":
        flag = "cuda" if torch.cuda.is_available() else "cpu"
    if flag.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {flag}: CUDA is not available on this machine (use --device cpu)")
        if flag == "cuda":
            flag = f"cuda:{local_rank}"
        index = int(flag.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {flag}: only {torch.cuda.device_count()} GPUs are visible")
        torch.cuda.set_device(index)
        return torch.device(flag)
    if flag != "cpu":
        raise UserError(f"--device {flag!r}: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device_flag: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_flag, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                device_id=device if device.type == "cuda" else None)
    return DistInfo(rank, world, local, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (small numpy arrays, numbers), in rank order; just ``[obj]`` without DDP."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op without DDP)."""
    if info.enabled:
        dist.barrier()


def all_true(flag: bool, info: DistInfo) -> bool:
    """Logical AND of a flag over all ranks (so that every rank takes the same branch)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())
