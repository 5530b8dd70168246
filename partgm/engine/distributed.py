"""Process groups and data parallelism, kept out of the model code.

One process (``partgm train``) or one per device under ``torchrun``, which sets RANK,
WORLD_SIZE and LOCAL_RANK. Backend: NCCL on CUDA, gloo on CPU. ``train.parallel``: DDP (replicated
parameters) or FSDP2 (``fully_shard``: parameters, gradients and optimizer state sharded over ranks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from partgm.devices import resolve_device


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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
    """Tear the process group down once every rank got here: a rank that destroys it while a peer still
    finishes the last collective aborts both (gloo: "terminate called without an active exception").
    Call it only when no rank failed (the barrier would wait for a dead peer)."""
    if dist.is_initialized():
        dist.barrier()
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


def parallelize(model: nn.Module, d: Dist, parallel: str = "ddp") -> nn.Module:
    """The module the training step calls: ``model`` itself alone; over ranks, DDP (a wrapper), or FSDP2
    (``fully_shard`` of every block, then of the root, in place: ``model``'s parameters become DTensor
    shards, so call this before building the optimizer and the EMA).

    Parameters, checkpoints and the EMA always use ``model`` (see ``full_state`` for FSDP)."""
    if d.world_size == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for blocks in (m for m in model.modules() if isinstance(m, nn.ModuleList)):
            for block in blocks:
                fully_shard(block)
        fully_shard(model)
        return model
    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` (FSDP2) was applied to ``model``."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextmanager
def no_sync(model: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter of this backward pass (accumulation micro-steps but
    the last)."""
    if skip and isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    elif skip and is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def full_tensor(x: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered (a collective: every rank calls it); any other tensor as it is."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, ema_shadow: dict[str, torch.Tensor]):
    """(model state, EMA state, optimizer state) as full, unsharded CPU tensors, for a checkpoint that
    any layout loads. With FSDP2 these are collectives (torch.distributed.checkpoint.state_dict): every
    rank calls this, rank 0 gets the states; without sharding they are the plain state dicts."""
    if not is_sharded(model):
        return model.state_dict(), {**model.state_dict(), **ema_shadow}, optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    shadow = {name: full_tensor(value).cpu() for name, value in ema_shadow.items()}
    return weights, {**weights, **shadow}, optim


def load_full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, ema_shadow: dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor], ema_weights: dict[str, torch.Tensor], optim: dict,
) -> None:
    """The inverse of ``full_state``: full states (on every rank) into a possibly sharded model,
    optimizer and EMA shadows (each rank keeps its shard)."""
    if not is_sharded(model):
        model.load_state_dict(weights)
        optimizer.load_state_dict(optim)
        for name, value in ema_shadow.items():
            value.copy_(ema_weights[name])
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.tensor import distribute_tensor

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim, options=options)
    with torch.no_grad():
        for name, value in ema_shadow.items():
            full = ema_weights[name].to(value.device, value.dtype)
            value.copy_(distribute_tensor(full, value.device_mesh, value.placements) if hasattr(value, "device_mesh")
                        else full)
