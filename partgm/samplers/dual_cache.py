"""An opt-in, approximate MDLM sampler: the dual cache (``dual-cache``), after Fast-dLLM's.

MDLM's denoiser is bidirectional over all L positions, masked ones included, so every step of the exact
samplers runs the whole sequence through every block. ``dual-cache`` keeps every block's keys / values of
all L positions from the last full pass (the "prefix" and the "suffix" of Fast-dLLM at once) and, between
refreshes, runs the network only on the positions decoded since the refresh and those decoded now: they
attend the cached keys of every other position, in which their own rows are fresh. Every ``refresh``
steps the whole sequence is run again (refresh 1: every step, which is exactly ``fast-ancestral``, token
for token; refresh 0: never after the first step). Fast-dLLM decodes block by block (semi-autoregressive);
here the order is MDLM's, random, so the recomputed set is scattered rather than one block.

What it trades: the work per step drops from L positions to the recently decoded ones, but the cached
positions (still masked, or decoded before the refresh) keep the keys they had at the refresh and do not
see the tokens decoded since, so the conditionals are not the model's: quality is the price; see
docs/speed.md.

Shapes: B batch, L length, A recomputed positions, W decoded now, h heads, d head size.
"""

from __future__ import annotations

import torch

from partgm.errors import PartgmError
from partgm.models.layers import KVCache, StaleKV
from partgm.samplers.base import register_sampler
from partgm.samplers.common import DecodePlan, choose_tokens, progress, with_spare_column
from partgm.samplers.masked import FastAncestralSampler


class DualCacheSampler(FastAncestralSampler):
    """``fast-ancestral``'s plan and draws with the approximate dual cache (module docstring); ``refresh``
    r: run the whole sequence every r steps (1: exact, equal to ``fast-ancestral``; 0: never). Off by
    default."""

    name = "dual-cache"
    family = "masked"

    def __init__(self, refresh: int = 4):
        if refresh < 0:
            raise PartgmError(f"refresh must be >= 0 (0: never), got {refresh}")
        self.refresh = refresh

    def flops(self, work, plan=None):
        return None  # the recomputed widths depend on the refresh: no analytic count yet

    def sample(self, algorithm, model, prompt, options, generator):
        if algorithm.sampler_family != self.family or not hasattr(model, "new_caches") or model.causal:
            raise PartgmError(f"the dual-cache sampler is for MDLM models (masked family), not '{algorithm.name}'")
        if options.guidance > 0.0 and prompt.labels is not None:
            raise PartgmError("the dual-cache sampler has no classifier-free guidance; use --sampler fast-ancestral")
        fixed = prompt.fixed
        length = fixed.shape[1]
        plan = DecodePlan.binomial(fixed, options.steps, algorithm.schedule, generator)
        noisy = with_spare_column(torch.where(fixed, prompt.tokens, algorithm.mask_id))  # [B, L + 1] network input
        caches: list[KVCache] = []
        recent: list[torch.Tensor] = []  # query positions [B, W] decoded since the last full pass
        for k, step in enumerate(progress(plan, options, self.name)):
            queries = step.query_positions
            if not caches or (self.refresh and k % self.refresh == 0):
                caches, recent = model.new_caches(), []
                logits = model(noisy[:, :length], caches=caches, output_index=queries, labels=prompt.labels)
            else:
                active = torch.cat([*recent, queries], dim=1)  # [B, A]; padded slots are position 0, as it is now
                stale = [StaleKV(c.k, c.v, active) for c in caches]
                index = torch.arange(active.shape[1] - queries.shape[1], active.shape[1], device=active.device)
                logits = model(noisy.gather(1, active), positions=active, caches=stale,
                               output_index=index.expand_as(queries), labels=prompt.labels)
            step.write(noisy, choose_tokens(logits[..., : algorithm.mask_id], options, generator))
            recent.append(queries)
        return noisy[:, :length]


register_sampler(DualCacheSampler)
