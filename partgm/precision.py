"""Numeric precision: the one place that decides when bf16 autocast is on."""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolved_precision(device: torch.device | str, precision: str = "auto") -> str:
    """``bf16`` for ``precision`` bf16, or ``auto`` on CUDA; ``fp32`` otherwise (what records report)."""
    return "bf16" if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda") else "fp32"


def autocast_for(device: torch.device | str, precision: str = "auto") -> torch.autocast:
    """bf16 autocast for ``precision`` bf16, or ``auto`` on CUDA; fp32 (autocast off) otherwise."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolved_precision(device, precision) == "bf16")
