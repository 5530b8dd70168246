"""Samplers of the partition family (PGM): the packed path with uniform or binomial step sizes, and
the naive full-length reference."""

from __future__ import annotations

import torch
from tqdm import tqdm

from partgm.algorithms.base import Context
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import DecodePlan, choose_tokens, denoiser_logits, with_spare_column


class UniformSampler(Sampler):
    """``min(steps, #free)`` steps of (nearly) equal size, exactly one forward pass each, in a random
    order per row (fixed positions are clean from the start). Each step the encoder reads only the
    clean tokens (packed, right-padded when rows differ), the decoder only the positions decoded now;
    tokens come from the float64 softmax by Gumbel-max."""

    name = "uniform"
    family = "partition"

    def plan(self, algorithm, prompt, options, generator) -> DecodePlan:
        return DecodePlan.uniform(prompt.fixed, options.steps, generator)

    def sample(self, algorithm, model, prompt, options, generator):
        plan = self.plan(algorithm, prompt, options, generator)
        length = prompt.fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~prompt.fixed, 0))  # [B, L + 1]
        for k, step in enumerate(tqdm(plan, total=len(plan), disable=not options.progress, desc=self.name)):
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


class NaiveSampler(UniformSampler):
    """As ``uniform``, but through the training-mode network on all L positions (clean = group 0, the
    rest = group 1, unknown tokens read as id 0). It draws exactly the same random numbers as
    ``uniform``, so both give the same tokens up to float rounding of the logits (a reference)."""

    name = "naive"

    def sample(self, algorithm, model, prompt, options, generator):
        plan = self.plan(algorithm, prompt, options, generator)
        length = prompt.fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~prompt.fixed, 0))
        rank = torch.empty_like(plan.order).scatter_(
            1, plan.order, torch.arange(length, device=plan.order.device).expand_as(plan.order)
        )
        for step in tqdm(plan, total=len(plan), disable=not options.progress, desc=self.name):
            groups = (rank >= step.start[:, None]).long()  # [B, L]: 1 = not clean yet
            logits = model(tokens[:, :length], groups, labels=prompt.labels)
            logits = logits.gather(1, step.query_positions[..., None].expand(-1, -1, logits.shape[-1]))
            step.write(tokens, choose_tokens(logits, options, generator))
        return tokens[:, :length]


for _cls in (UniformSampler, BinomialSampler, NaiveSampler):
    register_sampler(_cls)
