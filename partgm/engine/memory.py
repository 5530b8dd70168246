"""Before a network is allocated: its parameter count (built on the meta device) and the memory training
needs, checked against what the device has free, so that a huge config is one clear error, not an
out-of-memory kill."""

from __future__ import annotations

import os
from typing import Any

import torch

from partgm.errors import PartgmError

# fp32 weights, gradients, Adam's two moments and the EMA copy: 5 x 4 bytes (activations come on top)
TRAIN_BYTES_PER_PARAMETER = 20


def count_parameters(algorithm: Any, model_cfg: Any) -> int:
    """Parameters of ``algorithm.build_model(model_cfg)``, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = algorithm.build_model(model_cfg)
    return sum(p.numel() for p in model.parameters())


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's MemAvailable (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_training_fits(algorithm: Any, model_cfg: Any, device: torch.device, shards: int = 1) -> int:
    """The parameter count; PartgmError when training them (``TRAIN_BYTES_PER_PARAMETER`` each, over
    ``shards`` FSDP ranks) needs more than ``device`` has free."""
    n = count_parameters(algorithm, model_cfg)
    need, free = n * TRAIN_BYTES_PER_PARAMETER / max(shards, 1), available_bytes(device)
    if free is not None and need > free:
        raise PartgmError(
            f"the model has {n / 1e6:,.0f}M parameters: training needs about {need / 2**30:,.1f} GiB (weights, "
            f"gradients, Adam and EMA) but {device} has {free / 2**30:,.1f} GiB free: lower model.hidden_size "
            "or the number of blocks (partgm presets lists sizes that fit)")
    return n
