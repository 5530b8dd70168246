"""Shrinking or growing a recipe's training budget: ``partgm train --steps N``."""

from __future__ import annotations

from typing import Any

SCALED = ("warmup_steps", "eval_every", "save_every")  # the step counts that follow train.steps


def scaled_budget(train: Any, steps: int) -> dict[str, int]:
    """``train.steps`` -> ``steps``, with ``warmup_steps``, ``eval_every`` and ``save_every`` scaled by the
    same factor ``steps / train.steps`` (rounded; intervals at least 1, none above ``steps``), so that a
    recipe of 1000 steps with warmup 100 and evaluation every 250 becomes, at 200 steps, warmup 20 and
    evaluation every 50. ``train``: a ``TrainConfig``. Returns {field: value}, ``steps`` included."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    factor = steps / max(int(train.steps), 1)
    out = {"steps": steps, "warmup_steps": min(round(train.warmup_steps * factor), steps)}
    for key in ("eval_every", "save_every"):
        out[key] = min(max(round(getattr(train, key) * factor), 1), steps)
    return out
