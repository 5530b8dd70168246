"""Samplers of the masked family (MDLM, complementary MDLM): ancestral sampling."""

from __future__ import annotations

import torch

from partgm.algorithms.base import Context
from partgm.models.flops import Flops, dit_forward_flops
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import DecodePlan, choose_tokens, denoiser_logits, progress, with_spare_column
from partgm.samplers.cost import PlanWidths, SamplingCost, Workload, expected_binomial_plan


class AncestralSampler(Sampler):
    """Ancestral sampling on ``t_k = linspace(1, 1e-5, steps + 1)`` plus a final step at ``alpha_s = 1``
    -> tokens [B, L], from all ``[MASK]`` except the fixed positions of the prompt.

    Which positions are unmasked at each step does not depend on the sampled tokens, so it is drawn
    up front (``DecodePlan.binomial``: each masked token w.p. ``(alpha_s - alpha_t) / (1 - alpha_t)``).
    A step that unmasks nothing changes nothing: it is skipped, which is the reference's cached
    ``p_theta`` (the models are not time conditioned) without a host sync per step. So at most
    ``steps + 1`` forward passes, one per step that unmasks a token.

    ``ancestral`` has the reference's cost: every forward scores all L positions and draws ``x0`` from
    the float64 ``p_theta`` over L x N; the draws are kept where tokens are unmasked."""

    name = "ancestral"
    family = "masked"
    all_positions = True

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost:
        """The DiT on all L positions per pass, scoring N + 1 ids (the mask id too) at every position
        (``ancestral``) or at those unmasked now; the draws use N. Without ``plan``: its expectation."""
        d, b, length, vocab = work.shape, work.batch, work.length, work.vocab
        if plan is None:
            e = expected_binomial_plan(b, length, work.steps, work.schedule, work.n_fixed)
            out = e["passes"] * length if self.all_positions else e["sum_width"]
            flops = dit_forward_flops(d, b, length, vocab + 1, n_out=0) * e["passes"]
            flops = flops + Flops(logits=2 * b * out * d.hidden * (vocab + 1))
            return SamplingCost(self.name, flops, e["passes"], b * out * vocab, None, ["expected over the binomial plan"])
        flops, soft = Flops(), 0
        for _, width in plan:
            out = length if self.all_positions else width
            flops = flops + dit_forward_flops(d, b, length, vocab + 1, n_out=out)
            soft += b * out * vocab
        return SamplingCost(self.name, flops, len(plan), soft, list(plan))

    def sample(self, algorithm, model, prompt, options, generator):
        fixed = prompt.fixed
        batch, length = fixed.shape
        plan = DecodePlan.binomial(fixed, options.steps, algorithm.schedule, generator)
        tokens = with_spare_column(prompt.tokens)  # [B, L + 1]; only clean positions are read
        clean = with_spare_column(fixed)
        every_position = torch.arange(length, device=fixed.device).expand(batch, length)
        for k, step in enumerate(progress(plan, options, self.name)):
            context = Context(tokens[:, :length], clean[:, :length], prompt.labels)
            if self.all_positions:
                logits = denoiser_logits(algorithm, model, context, every_position, options, k / len(plan))
                values = choose_tokens(logits, options, generator).gather(1, step.query_positions)
            else:
                logits = denoiser_logits(algorithm, model, context, step.query_positions, options, k / len(plan))
                values = choose_tokens(logits, options, generator)
            step.write(tokens, values)
            step.write(clean, torch.ones_like(values, dtype=torch.bool))
        return tokens[:, :length]


class FastAncestralSampler(AncestralSampler):
    """The same distribution as ``ancestral``, with logits and draws only at the positions unmasked now."""

    name = "fast-ancestral"
    all_positions = False


for _cls in (AncestralSampler, FastAncestralSampler):
    register_sampler(_cls)
