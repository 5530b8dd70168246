"""Exponential moving average of the weights, kept in float32."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def ema_decay(decay: float, num_updates: int) -> float:
    """Warm-up decay ``min(decay, (1 + n) / (10 + n))`` for the (n + 1)-th update."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EMA:
    """Shadow copies of ``model``'s parameters (float32), updated after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1.0 - ema_decay(self.decay, self.num_updates)
        for name, p in model.named_parameters():
            self.shadow[name].lerp_(p.detach().float(), weight)
        self.num_updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start again from ``model``'s weights, with the warm-up of a fresh average."""
        for name, p in model.named_parameters():
            self.shadow[name].copy_(p.detach().float())
        self.num_updates = 0

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run the block with the EMA weights in ``model``; the trained weights come back afterwards."""
        backup = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(backup[name])

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``model.state_dict()`` with the parameters replaced by their averages (loads into ``model``)."""
        return {**model.state_dict(), **self.shadow}

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
