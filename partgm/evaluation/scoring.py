"""Likelihood scoring of token sequences for any algorithm, through its denoiser (see ``zeroshot``)."""

from __future__ import annotations

from typing import Any

import torch

from partgm.algorithms.base import Batch as TokenBatch
from partgm.algorithms.base import Context
from partgm.errors import PartgmError
from partgm.schedules import antithetic_times


class Scorer:
    """Argmax predictions and (MC) likelihood scores of sequences for one algorithm and model, through
    the algorithm's denoiser (``Algorithm.logits``) and NELBO terms; exact for left-to-right models."""

    def __init__(self, algorithm: Any, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.algorithm, self.model, self.device = algorithm, model, torch.device(device)

    @property
    def exact(self) -> bool:
        return self.algorithm.exact_likelihood

    @property
    def pads_to_length(self) -> bool:
        return not self.exact

    @torch.no_grad()
    def argmax(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax ids [B, T] at the target positions (-1 elsewhere), all-correct [B] bool), every
        target position predicted at once from the non-target tokens (AR: teacher forcing)."""
        x, target = x.to(self.device), target.to(self.device)
        first = 1 if self.exact else 0  # a left-to-right model does not predict position 0
        positions = torch.arange(first, x.shape[1], device=self.device).expand(x.shape[0], -1)
        pred = torch.full_like(x, -1)
        pred[:, first:] = self.algorithm.logits(self.model, Context(x, ~target), positions).argmax(-1)
        pred = torch.where(target, pred, torch.full_like(pred, -1))
        correct = ((pred == x) | ~target).all(dim=1)
        return pred.cpu(), correct.cpu()

    @torch.no_grad()
    def nll(self, x: torch.Tensor, region: torch.Tensor, mc_samples: int = 32, seed: int = 0) -> torch.Tensor:
        """Per-row score (float64 [B]) of the tokens in ``region`` [B, T]: the exact NLL given the tokens
        before for left-to-right models; else the NELBO averaged over ``mc_samples`` draws shared by all rows."""
        x, region = x.to(self.device), region.to(self.device)
        if self.exact:
            nll = self.algorithm.sequence_nll(self.model, TokenBatch(x)).double()
            return (nll * region[:, 1:]).sum(1).cpu()
        if mc_samples < 1:
            raise PartgmError("the number of Monte-Carlo samples must be positive")
        gen = torch.Generator().manual_seed(seed)
        times = antithetic_times(mc_samples, gen)  # [K], on CPU
        uniforms = torch.rand(mc_samples, x.shape[1], generator=gen, dtype=torch.float64)  # [K, T]
        schedule = self.algorithm.schedule
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=self.device)
        for k in range(mc_samples):
            t = times[k].expand(x.shape[0]).to(self.device)
            p_mask = float(1.0 - schedule.alpha(times[k].double()))
            masked = region & (uniforms[k] < p_mask).to(self.device)[None, :]
            total += self.algorithm.masked_nelbo_terms(self.model, TokenBatch(x), masked, t).double().sum(1)
        return (total / mc_samples).cpu()
