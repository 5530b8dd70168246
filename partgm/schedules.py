"""Noise schedules and training-time sampling.

A schedule maps t in [0, 1] to ``alpha_t``, the probability that a token is *not* masked, and its
derivative ``alpha_t'``. The masked-diffusion loss weight is ``w(t) = -alpha_t' / (1 - alpha_t)``; a token
kept w.p. ``1 - alpha_t`` instead (PGM's group 0, the complement of ``mdlm-complement``) is masked at rate
``alpha_t`` and weighs ``-alpha_t' / alpha_t`` (``complement_weight``).
"""

from __future__ import annotations

import math

import torch

from partgm.errors import PartgmError

MIN_TRAIN_TIME = 1e-3


class NoiseSchedule:
    """Interface: ``alpha(t)`` and ``alpha_prime(t)`` for t a tensor of any shape."""

    name = "base"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """``w(t) = -alpha_t' / (1 - alpha_t)``, the NELBO weight of a masked token."""
        return -self.alpha_prime(t) / (1.0 - self.alpha(t))

    def complement_weight(self, t: torch.Tensor) -> torch.Tensor:
        """``-alpha_t' / alpha_t``: the NELBO weight of a token masked w.p. ``alpha_t`` (the complement of a
        mask drawn at t), by the change of variables ``1 - alpha(s) = alpha(t)`` in the bound's integral."""
        return -self.alpha_prime(t) / self.alpha(t)


class LogLinearSchedule(NoiseSchedule):
    """``alpha_t = 1 - (1 - eps) t``: the MDLM default, where ``w(t)`` is about ``1 / t``."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - (1.0 - self.eps) * t

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(t, -(1.0 - self.eps))

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Exactly ``1 / t`` (the generic formula loses digits in float32 near t = 0)."""
        return 1.0 / t


class CosineSchedule(NoiseSchedule):
    """``alpha_t = (1 - eps) cos(pi t / 2)``."""

    name = "cosine"

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.eps) * torch.cos(0.5 * math.pi * t)

    def alpha_prime(self, t: torch.Tensor) -> torch.Tensor:
        return -(1.0 - self.eps) * 0.5 * math.pi * torch.sin(0.5 * math.pi * t)


SCHEDULES = {"loglinear": LogLinearSchedule, "cosine": CosineSchedule}


def get_schedule(name: str) -> NoiseSchedule:
    if name not in SCHEDULES:
        raise PartgmError(f"unknown noise schedule '{name}' (choose from {', '.join(SCHEDULES)})")
    return SCHEDULES[name]()


def antithetic_times(
    n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Low-discrepancy training times for a *global* batch of n sequences.

    ``u_i = (u / n + i / n) mod 1`` with one shared ``u ~ U[0, 1)``, mapped to
    ``t = (1 - 1e-3) u + 1e-3``. Returns float32 [n] on ``device``; each rank takes its slice.
    """
    u = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
    u = (u.double().cpu() / n + torch.arange(n, dtype=torch.float64) / n) % 1.0
    return ((1.0 - MIN_TRAIN_TIME) * u + MIN_TRAIN_TIME).float().to(device)
