"""Image samplers (spec section 5): MaskGIT's confidence sampler and the Halton sampler, both on the
arccos schedule, for any denoiser (``Algorithm.logits``): the masked family (MaskGIT, MDLM) and the
partition family (PGM, whose encoder reads only the clean tokens and whose decoder reads only the
queried positions). Classifier-free guidance comes from ``SamplingOptions`` via ``denoiser_logits``.

Both are registered in the ``masked`` and ``partition`` families; MaskGIT offers ``confidence`` first and
PGM for images ``halton`` first (``Algorithm.samplers``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from tqdm import tqdm

from partgm.algorithms.base import Context
from partgm.errors import PartgmError
from partgm.images.halton import arccos_schedule, halton_order
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import (
    DecodePlan,
    choose_tokens,
    denoiser_logits,
    progress,
    remaining_queries,
    sample_categorical,
    token_probs,
    with_spare_column,
)

CONFIDENCE_RANDOMNESS = 4.5  # r_temp: the scale of the Gumbel noise added to the confidences at step 0


def arccos_counts(fixed: torch.Tensor, steps: int) -> torch.Tensor:
    """fixed [B, L] bool -> counts [steps, B] long: the arccos schedule of each row's free positions."""
    n_free = (~fixed).sum(dim=1).tolist()
    table = {n: arccos_schedule(steps, n) for n in set(n_free)}
    return torch.tensor([table[n] for n in n_free], dtype=torch.long, device=fixed.device).T


class ConfidenceSampler(Sampler):
    """MaskGIT's sampler: at step k of S it draws a token at *every* remaining position (temperature and
    nucleus as ``choose_tokens``) and keeps the ``counts[k]`` (arccos schedule) with the highest
    confidence ``log p(token) + g * r_temp * (1 - k / (S - 1))``, g standard Gumbel noise. For PGM the
    decoder queries exactly the remaining positions."""

    name = "confidence"
    family = "masked"

    def sample(self, algorithm, model, prompt, options, generator):
        fixed = prompt.fixed
        length = fixed.shape[1]
        counts = arccos_counts(fixed, options.steps)
        counts = counts[counts.any(dim=1)]
        host_counts = counts.tolist()
        n_clean = fixed.sum(dim=1).tolist()
        tokens = with_spare_column(prompt.tokens.masked_fill(~fixed, 0))  # [B, L + 1]
        clean = with_spare_column(fixed)
        n_steps = len(host_counts)
        for k in tqdm(range(n_steps), disable=not options.progress, desc=self.name):
            clean_now = clean[:, :length]
            packed, query, query_valid = remaining_queries(clean_now, n_clean)
            slots = torch.arange(query.shape[1], device=fixed.device)
            context = Context(tokens[:, :length], clean_now, prompt.labels, packed)
            logits = denoiser_logits(algorithm, model, context, query, options, k / n_steps)
            if options.temperature != 1.0:
                logits = logits.float() / options.temperature
            probs = token_probs(logits, options.nucleus)  # [B, W, N] float64
            values = sample_categorical(probs, generator)  # [B, W]
            log_p = (probs.gather(-1, values[..., None])[..., 0] / probs.sum(-1)).log()
            u = torch.rand(values.shape, generator=generator, device=fixed.device, dtype=torch.float64)
            gumbel = -(-u.clamp(min=1e-20).log()).log()
            confidence = log_p + gumbel * CONFIDENCE_RANDOMNESS * (1 - k / max(n_steps - 1, 1))
            confidence = confidence.masked_fill(~query_valid, float("-inf"))
            rank = torch.empty_like(query).scatter_(
                1, confidence.argsort(dim=1, descending=True), slots.expand_as(query)
            )
            keep = rank < counts[k][:, None]  # [B, W]
            where = torch.where(keep, query, length)  # dropped draws land in the spare column
            tokens.scatter_(1, where, values)
            clean.scatter_(1, where, torch.ones_like(keep))
            n_clean = [n + c for n, c in zip(n_clean, host_counts[k])]
        return tokens[:, :length]


class HaltonSampler(Sampler):
    """The Halton sampler: positions in the fixed 2-D Halton order of the grid (``halton_order``; a 1-D
    order for data without a grid), ``counts[k]`` (arccos schedule) per step, plain categorical draws
    (the first step at half temperature). Only the positions decoded now are queried."""

    name = "halton"
    family = "masked"

    def order(self, algorithm, prompt) -> torch.Tensor:
        fixed = prompt.fixed
        length = fixed.shape[1]
        height, width = algorithm.space.grid or (1, length)
        if height * width != length:
            raise PartgmError(f"the Halton sampler needs {height}x{width} = {height * width} positions, not {length}")
        visit = halton_order(height, width).to(fixed.device)
        rank = torch.empty_like(visit).scatter_(0, visit, torch.arange(length, device=fixed.device))
        order = rank.expand_as(fixed).masked_fill(fixed, -1).argsort(dim=1, stable=True)  # fixed first
        return order

    def sample(self, algorithm, model, prompt, options, generator):
        fixed = prompt.fixed
        length = fixed.shape[1]
        plan = DecodePlan(fixed, self.order(algorithm, prompt), arccos_counts(fixed, options.steps))
        tokens = with_spare_column(prompt.tokens.masked_fill(~fixed, 0))  # [B, L + 1]
        clean = with_spare_column(fixed)
        first = replace(options, temperature=options.temperature / 2)
        for k, step in enumerate(progress(plan, options, self.name)):
            packed = (plan.order[:, : step.clean_width], step.clean_valid)
            context = Context(tokens[:, :length], clean[:, :length], prompt.labels, packed)
            logits = denoiser_logits(algorithm, model, context, step.query_positions, options, k / len(plan))
            step.write(tokens, choose_tokens(logits, first if k == 0 else options, generator))
            step.write(clean, torch.ones_like(step.query_valid))
        return tokens[:, :length]


for _cls in (ConfidenceSampler, HaltonSampler):
    register_sampler(_cls)
    register_sampler(_cls, family="partition")
