"""What a whole generation costs: ``Workload`` (the generation to count), ``SamplingCost`` (its FLOPs,
forward passes and softmax size) and the plan widths the counts need. Each sampler counts itself
(``Sampler.flops``) with the networks' counts of ``partgm.models.flops``; conventions are there.

Shapes: B batch, L length, S steps, N real ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

import torch

from partgm.models.config import ModelConfig
from partgm.models.flops import (
    Dims,
    Flops,
    partition_constant_flops,
    partition_flops,
    partition_forward_flops,
    partition_packed_flops,
)
from partgm.samplers.common import FINAL_TIME
from partgm.schedules import LogLinearSchedule, NoiseSchedule


@dataclass(frozen=True)
class Workload:
    """One generation of [batch, length] in ``steps`` steps over ``vocab`` = N real ids, by a network of
    ``dims`` (a model config or ``Dims``); ``n_fixed`` positions fixed in every row (BOS only: 1);
    ``schedule``: the binomial plan's (default log-linear); ``layout``: the attention layout of the naive
    sampler's training-mode forward (``dense`` | ``blocks``)."""

    dims: ModelConfig | Dims
    batch: int
    length: int
    steps: int
    vocab: int
    n_fixed: int = 1
    schedule: NoiseSchedule | None = None
    layout: str = "dense"

    @property
    def shape(self) -> Dims:
        return Dims.of(self.dims)


PlanWidths = list[tuple[int, int]]  # one (clean_width, query_width) per forward pass


@dataclass
class SamplingCost:
    """A whole generation: ``flops`` (Flops), ``forward_passes`` (float when an expectation),
    ``softmax_elements``: entries of the float64 probabilities the sampler builds (rows x N, not FLOPs),
    ``plan``: the (clean_width, query_width) of each forward when known."""

    sampler: str
    flops: Flops
    forward_passes: float
    softmax_elements: float
    plan: PlanWidths | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"sampler": self.sampler, **{f"flops_{k}": v for k, v in self.flops.as_dict().items()},
                "forward_passes": self.forward_passes, "softmax_elements": self.softmax_elements}


def uniform_plan_widths(length: int, steps: int, n_fixed: int = 1) -> PlanWidths:
    """``DecodePlan.uniform`` when every row fixes ``n_fixed`` positions (BOS only: 1): min(steps, n)
    steps for n = L - n_fixed, step k decoding done_{k+1} - done_k with done_k = k n // S (counts differ
    by at most one), the encoder reading n_fixed + done_k clean tokens."""
    n_free = length - n_fixed
    n_steps = min(steps, n_free)
    done = [k * n_free // max(n_steps, 1) for k in range(n_steps + 1)]
    return [(n_fixed + done[k], done[k + 1] - done[k]) for k in range(n_steps) if done[k + 1] > done[k]]


def plan_widths(plan) -> PlanWidths:
    """The realised widths of a ``samplers.common.DecodePlan`` (any rows, uniform or binomial): per
    forward pass (max clean tokens over rows, max positions decoded over rows), as the sampler pads them.
    One host read of ``plan.bounds`` (for benchmarks only)."""
    bounds = plan.bounds.tolist()  # [S + 1][B]
    return [(max(lo), max(h - l for l, h in zip(lo, hi))) for lo, hi in pairwise(bounds)]


def binomial_step_probs(length: int, steps: int, schedule: NoiseSchedule | None = None) -> list[float]:
    """P(a free position is decoded at step k), k = 0..steps (the last is the final alpha = 1 step), as
    ``DecodePlan.binomial`` draws them. ``schedule`` defaults to the log-linear one (eps 1e-3)."""
    schedule = schedule or LogLinearSchedule()
    t = torch.linspace(1.0, FINAL_TIME, steps + 1, dtype=torch.float64)
    alpha = schedule.alpha(t)
    alpha_s = torch.cat([alpha[1:], alpha.new_ones(1)])
    cdf = ((alpha_s - alpha[0]) / (1.0 - alpha[0])).clamp(0.0, 1.0)
    return torch.diff(cdf, prepend=cdf.new_zeros(1)).clamp(min=0.0).tolist()


def expected_binomial_plan(
    batch: int, length: int, steps: int, schedule: NoiseSchedule | None = None, n_fixed: int = 1
) -> dict:
    """Expectations for ``DecodePlan.binomial`` with n = L - n_fixed free positions per row, positions
    independent: ``passes`` = E[#steps where some row decodes] = sum_k 1 - (1 - p_k)^(B n) (at most
    steps + 1); ``sum_width`` = sum_k E[max over rows of Binomial(n, p_k)] (the padded query width of
    MDLM fast / PGM binomial); ``sum_clean_width`` = sum_k E[max_b clean_b before step k] (approximated
    by n_fixed + n * cdf_{k-1} for the expected row, padding ignored) over non-empty steps."""
    n = length - n_fixed
    probs = binomial_step_probs(length, steps, schedule)
    m = torch.arange(n + 1, dtype=torch.float64)
    log_choose = torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64)) - torch.lgamma(m + 1) - torch.lgamma(n - m + 1)
    passes = sum_width = sum_clean = 0.0
    done = 0.0
    for p in probs:
        nonempty = 1.0 - (1.0 - p) ** (batch * n)
        passes += nonempty
        if p >= 1.0:
            cdf = (m >= n).double()
        elif p <= 0.0:
            cdf = torch.ones_like(m)
        else:
            log_pmf = log_choose + m * math.log(p) + (n - m) * math.log1p(-p)
            cdf = log_pmf.exp().cumsum(0).clamp(max=1.0)
        sum_width += float((1.0 - cdf[:-1] ** batch).sum())  # E[max] = sum_{j>=1} P(max >= j)
        sum_clean += nonempty * (n_fixed + n * done)
        done += p
    return {"passes": passes, "sum_width": sum_width, "sum_clean_width": sum_clean}


def packed_cost(name: str, work: Workload, plan: PlanWidths) -> SamplingCost:
    """The packed PGM samplers over a known plan: the conditioning part once per generation, then per
    forward the encoder on the clean width and the decoder on the query width."""
    d, b = work.shape, work.batch
    constant = partition_constant_flops(d, b)
    flops = constant if plan else Flops()
    for clean, width in plan:
        flops = flops + partition_packed_flops(d, b, clean, width, work.vocab) - constant
    return SamplingCost(name, flops, len(plan), sum(b * w * work.vocab for _, w in plan), list(plan))


def expected_packed_cost(name: str, work: Workload) -> SamplingCost:
    """The packed PGM samplers over the binomial plan, in expectation: the encoder width of each pass is
    approximated by the expected clean count (padding to the row maximum ignored)."""
    d, b = work.shape, work.batch
    e = expected_binomial_plan(b, work.length, work.steps, work.schedule, work.n_fixed)
    mean_clean = e["sum_clean_width"] / max(e["passes"], 1e-12)
    mean_q = e["sum_width"] / max(e["passes"], 1e-12)
    per_pass = partition_flops(d, b, mean_clean, mean_q, b * mean_clean**2, b * mean_q * mean_clean,
                               work.vocab)  # attention: the product of the means
    constant = partition_constant_flops(d, b)  # prepared once per generation
    notes = ["expected over the binomial plan", "encoder width approximated by the expected clean count"]
    return SamplingCost(name, (per_pass - constant) * e["passes"] + constant, e["passes"],
                        b * e["sum_width"] * work.vocab, None, notes)


def naive_cost(name: str, work: Workload, plan: PlanWidths) -> SamplingCost:
    """The naive PGM sampler: the training-mode forward on all L positions per pass (``work.layout``)."""
    d, b = work.shape, work.batch
    flops = Flops()
    for clean, _ in plan:
        sizes = [clean] * b if work.layout == "blocks" else None
        flops = flops + partition_forward_flops(d, b, work.length, work.vocab, work.layout, sizes)
    return SamplingCost(name, flops, len(plan), sum(b * w * work.vocab for _, w in plan), list(plan))
