"""Process groups and data parallelism, kept out of the model code.

One process (``partgm train``) or one per device under ``torchrun``, which sets RANK,
WORLD_SIZE and LOCAL_RANK. Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from partgm.errors import PartgmError


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else the CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PartgmError(f"unknown device '{name}' (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PartgmError(f"device '{name}' was asked for but CUDA is not available")
    return device


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group that ``torchrun`` describes, or run alone when it is absent."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(0, 1, 0, resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return Dist(rank, world, local_rank, dev)


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over all ranks in place (a no-op in a single process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def parallelize(model: nn.Module, d: Dist) -> nn.Module:
    """The module the training step calls: ``model`` itself alone, DDP over ranks otherwise.

    Parameters, checkpoints and the EMA always use the unwrapped ``model``. (FSDP2 would go here.)
    """
    if d.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def no_sync(model: nn.Module, skip: bool) -> AbstractContextManager:
    """Skip the gradient all-reduce of this backward pass (accumulation micro-steps but the last)."""
    return model.no_sync() if skip and isinstance(model, DistributedDataParallel) else nullcontext()
