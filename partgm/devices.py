"""Devices: the one rule that turns a device name (auto, cpu, cuda, cuda:N) into a ``torch.device``."""

from __future__ import annotations

import torch

from partgm.errors import PartgmError


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
