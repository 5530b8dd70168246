"""AdamW and the learning-rate schedule (linear warm-up, then constant or cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from partgm.config import TrainConfig


def build_optimizer(model: nn.Module, tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (>= 2-D parameters) only; biases and norm gains get none."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=tc.lr, betas=tc.betas)


def lr_factor(step: int, tc: TrainConfig) -> float:
    """Multiplier of ``tc.lr`` for the update after ``step`` completed optimizer steps.

    Linear warm-up ``(step + 1) / warmup_steps``, then 1 (constant) or a cosine from 1 down to
    ``min_lr_ratio`` at ``step == tc.steps``; ``cosine-tail`` (the image recipe of Halton-MaskGIT and
    PGM): 1 until the last 10% of the steps, then ``max(0.5 (1 + cos(pi d)), 0.01)`` over them (d: 0 -> 1).
    """
    if step < tc.warmup_steps:
        return (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return 1.0
    if tc.lr_schedule == "cosine-tail":
        tail = 0.1 * tc.steps
        if step <= tc.steps - tail:
            return 1.0
        return max(0.5 * (1.0 + math.cos(math.pi * (step - (tc.steps - tail)) / tail)), 0.01)
    progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, tc))
