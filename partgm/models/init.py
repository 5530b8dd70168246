"""Weight initialisation helpers that are not part of any network's own init."""

from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (the zero-initialised layers too), so outputs are not degenerate:
    for benchmarks, which do not depend on training, and for tests of exact equalities."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model
