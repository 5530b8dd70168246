"""Samplers of the partition family (PGM): the packed path with uniform or binomial step sizes, and
the naive full-length reference; ``CompiledPacked``: the packed forward under ``torch.compile``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from partgm.algorithms.base import Context
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import DecodePlan, choose_tokens, denoiser_logits, progress, with_spare_column
from partgm.samplers.cost import (
    PlanWidths,
    SamplingCost,
    Workload,
    expected_packed_cost,
    naive_cost,
    packed_cost,
    uniform_plan_widths,
)


class UniformSampler(Sampler):
    """``min(steps, #free)`` steps of (nearly) equal size, exactly one forward pass each, in a random
    order per row (fixed positions are clean from the start). Each step the encoder reads only the
    clean tokens (packed, right-padded when rows differ), the decoder only the positions decoded now;
    tokens come from the float64 softmax by Gumbel-max."""

    name = "uniform"
    family = "partition"

    def __init__(self, compile: CompiledPacked | None = None):
        """``compile``: run the network's packed forward through this ``CompiledPacked`` (same logits)."""
        self.compile = compile

    def plan(self, algorithm, prompt, options, generator) -> DecodePlan:
        return DecodePlan.uniform(prompt.fixed, options.steps, generator)

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost:
        """Without ``plan``: the uniform widths (exact for prompts fixing ``work.n_fixed`` per row)."""
        return packed_cost(self.name, work, uniform_plan_widths(work.length, work.steps, work.n_fixed)
                           if plan is None else plan)

    def sample(self, algorithm, model, prompt, options, generator):
        plan = self.plan(algorithm, prompt, options, generator)
        if self.compile is not None:
            model = self.compile.bind(model)
        length = prompt.fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~prompt.fixed, 0))  # [B, L + 1]
        for k, step in enumerate(progress(plan, options, self.name)):
            clean_positions = plan.order[:, : step.clean_width]
            context = Context(tokens[:, :length], prompt.fixed, prompt.labels, (clean_positions, step.clean_valid))
            logits = denoiser_logits(algorithm, model, context, step.query_positions, options, k / len(plan))
            step.write(tokens, choose_tokens(logits, options, generator))
        return tokens[:, :length]


class BinomialSampler(UniformSampler):
    """MDLM's step sizes (``DecodePlan.binomial``); steps where no row decodes anything cost nothing."""

    name = "binomial"

    def plan(self, algorithm, prompt, options, generator) -> DecodePlan:
        return DecodePlan.binomial(prompt.fixed, options.steps, algorithm.schedule, generator)

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost:
        """Without ``plan``: the expectation over the binomial plan."""
        return expected_packed_cost(self.name, work) if plan is None else packed_cost(self.name, work, plan)


class NaiveSampler(UniformSampler):
    """As ``uniform``, but through the training-mode network on all L positions (clean = group 0, the
    rest = group 1, unknown tokens read as id 0). It draws exactly the same random numbers as
    ``uniform``, so both give the same tokens up to float rounding of the logits (a reference)."""

    name = "naive"

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost:
        return naive_cost(self.name, work, uniform_plan_widths(work.length, work.steps, work.n_fixed)
                          if plan is None else plan)

    def sample(self, algorithm, model, prompt, options, generator):
        plan = self.plan(algorithm, prompt, options, generator)
        length = prompt.fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~prompt.fixed, 0))
        rank = torch.empty_like(plan.order).scatter_(
            1, plan.order, torch.arange(length, device=plan.order.device).expand_as(plan.order)
        )
        for step in progress(plan, options, self.name):
            groups = (rank >= step.start[:, None]).long()  # [B, L]: 1 = not clean yet
            logits = model(tokens[:, :length], groups, labels=prompt.labels)
            logits = logits.gather(1, step.query_positions[..., None].expand(-1, -1, logits.shape[-1]))
            step.write(tokens, choose_tokens(logits, options, generator))
        return tokens[:, :length]


class CompiledPacked:
    """``forward_packed`` of a Partition Transformer under ``torch.compile`` with a bounded set of shapes:
    the clean width is padded up to a multiple of ``bucket`` (padding is masked out, so the logits are
    those of the unpadded call up to float rounding) and the query width to a multiple of
    ``query_bucket``. A generation of length L then compiles at most about L / bucket graphs (per query
    width); ``compiles`` counts them. The per-sequence constants (``prepare``) are computed outside the
    graph, once per model and batch."""

    def __init__(self, bucket: int = 64, query_bucket: int = 8, backend: str = "inductor", mode: str | None = None):
        self.bucket, self.query_bucket = bucket, query_bucket
        self.backend, self.mode = backend, mode
        self.compiles = 0
        self._compiled: dict[int, object] = {}

    def bind(self, model) -> _BoundPacked:
        """A stand-in for ``model`` whose ``forward_packed`` is bucketed and compiled."""
        key = id(model)
        if key not in self._compiled:
            import torch._dynamo

            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)

            def counting(gm, example_inputs):
                self.compiles += 1
                if self.backend == "eager":
                    return gm.forward
                from torch._dynamo.backends.registry import lookup_backend

                return lookup_backend(self.backend)(gm, example_inputs)

            backend = counting if self.mode is None else self.backend
            self._compiled[key] = torch.compile(model.forward_packed, dynamic=False, backend=backend,
                                                **({"mode": self.mode} if self.mode else {}))
        return _BoundPacked(self, model, self._compiled[key])


class _BoundPacked:
    def __init__(self, owner: CompiledPacked, model, compiled):
        self.owner, self.model, self.compiled = owner, model, compiled
        self._prepared: dict = {}

    def forward_packed(self, clean_tokens, clean_positions, query_positions, clean_valid=None, labels=None):
        b, lc = clean_tokens.shape
        lq = query_positions.shape[1]
        pad_c = -lc % self.owner.bucket
        pad_q = -lq % self.owner.query_bucket
        if clean_valid is None:
            clean_valid = torch.ones_like(clean_tokens, dtype=torch.bool)
        key = (b, None if labels is None else id(labels))
        if key not in self._prepared:
            self._prepared[key] = (labels, self.model.prepare(b, clean_tokens.device, labels))
        logits = self.compiled(
            F.pad(clean_tokens, (0, pad_c)), F.pad(clean_positions, (0, pad_c)), F.pad(query_positions, (0, pad_q)),
            F.pad(clean_valid, (0, pad_c), value=False), prepared=self._prepared[key][1],
        )
        return logits[:, :lq]


for _cls in (UniformSampler, BinomialSampler, NaiveSampler):
    register_sampler(_cls)
