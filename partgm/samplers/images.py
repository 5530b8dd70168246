"""Image samplers (spec section 5): MaskGIT's confidence sampler and the Halton sampler, both on the
arccos schedule, for any denoiser (``Algorithm.logits``): the masked family (MaskGIT, MDLM) and the
partition family (PGM, whose encoder reads only the clean tokens and whose decoder reads only the
queried positions). Classifier-free guidance comes from ``SamplingOptions`` via ``denoiser_logits``.

Both are registered in the ``masked`` and ``partition`` families; MaskGIT offers ``confidence`` first and
PGM for images ``halton`` first (``Algorithm.samplers``). The authors' numbers follow the family: the
partition family (PGM) takes their PGM samplers' (confidence counts, r_temp 5, guidance ramped by both),
the masked family (MaskGIT, MDLM) their MaskGIT's (r_temp 4.5, Halton guidance constant).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from tqdm import tqdm

from partgm.algorithms.base import Context
from partgm.errors import PartgmError
from partgm.images.halton import arccos_schedule, halton_order
from partgm.samplers.base import Sampler, get_sampler, register_sampler
from partgm.samplers.common import (
    DecodePlan,
    SamplingOptions,
    denoiser_logits,
    progress,
    remaining_queries,
    sample_categorical,
    sample_tokens,
    token_probs,
    with_spare_column,
)
from partgm.samplers.image_schedules import (
    ImageSampling,
    confidence_revealed,
    guidance_weight,
    halton_revealed,
    step_counts,
)


def counts_table(fixed: torch.Tensor, steps: int, revealed: Callable[[int], list[int]]) -> torch.Tensor:
    """fixed [B, L] bool -> counts [steps, B] long: each row's free positions on ``revealed(n)`` (the
    cumulative number revealed after each step), one entry per distinct n."""
    n_free = (~fixed).sum(dim=1).tolist()
    table = {n: step_counts(revealed(n)) if n else [0] * steps for n in set(n_free)}
    return torch.tensor([table[n] for n in n_free], dtype=torch.long, device=fixed.device).T


def arccos_counts(fixed: torch.Tensor, steps: int) -> torch.Tensor:
    """partgm's schedule (``images.halton.arccos_schedule``) as ``counts_table``."""
    return counts_table(fixed, steps, lambda n: list(itertools.accumulate(arccos_schedule(steps, n))))


def _step_logits(logits: torch.Tensor, scale: float, options: SamplingOptions, top_k: int) -> torch.Tensor:
    """The logits of one step: times the authors' multiplier, over ``--temperature``, top-k filtered."""
    factor = scale / options.temperature
    if factor != 1.0:
        logits = logits.float() * factor
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits


class ImageSampler(Sampler):
    """What the two image samplers share: the authors' options (``ImageSampling``) and the guidance ramp
    (``guidance_schedule`` auto: ``ramps``, the authors' choice)."""

    def __init__(self, settings: ImageSampling | None = None):
        self.settings = settings or ImageSampling()

    def ramps(self, algorithm) -> bool:
        """The authors' guidance ramp for this algorithm (``guidance_schedule`` auto)."""
        return True

    def guided(self, algorithm, model, context, query, options: SamplingOptions, k: int, n_steps: int):
        ramp = options.guidance_schedule == "linear" or (
            options.guidance_schedule == "auto" and self.ramps(algorithm))
        w = guidance_weight(options.guidance, k, n_steps, ramp)
        return denoiser_logits(algorithm, model, context, query, replace(options, guidance=w,
                               guidance_schedule="constant"))


class ConfidenceSampler(ImageSampler):
    """MaskGIT's sampler: at step k of S it draws a token at *every* remaining position and keeps the
    ``counts[k]`` with the highest confidence ``log p(token) + r_temp * (1 - k / (S - 1)) * g``, g standard
    Gumbel noise. Counts: the authors' (``confidence_revealed``: step 0 reveals one token, then the arccos
    schedule over ``linspace(0, 1, S)``) or partgm's. For PGM the decoder queries exactly the remaining
    positions."""

    name = "confidence"
    family = "masked"

    def sample(self, algorithm, model, prompt, options, generator):
        fixed, settings = prompt.fixed, self.settings
        length = fixed.shape[1]
        if settings.schedule == "authors":
            variant = "pgm-image" if algorithm.sampler_family == "partition" else "maskgit"
            counts = counts_table(fixed, options.steps, lambda n: confidence_revealed(options.steps, n, variant))
        else:
            counts = arccos_counts(fixed, options.steps)
        counts = counts[counts.any(dim=1)]
        r_temp = settings.gumbel_scale(algorithm.sampler_family)
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
            logits = self.guided(algorithm, model, context, query, options, k, n_steps)
            probs = token_probs(_step_logits(logits, 1.0, options, settings.top_k), options.nucleus)
            values = sample_categorical(probs, generator)  # [B, W]
            log_p = (probs.gather(-1, values[..., None])[..., 0] / probs.sum(-1)).log()
            u = torch.rand(values.shape, generator=generator, device=fixed.device, dtype=torch.float64)
            gumbel = -(-u.clamp(min=1e-20).log()).log()
            confidence = log_p + gumbel * r_temp * (1 - k / max(n_steps - 1, 1))
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


class HaltonSampler(ImageSampler):
    """The Halton sampler: positions in the fixed 2-D Halton order of the grid (``halton_order``; a 1-D
    order for data without a grid; ``randomize``: rolled by a random offset per sample), ``counts[k]``
    per step (the authors' ``halton_revealed`` or partgm's schedule), categorical draws from
    ``softmax(logits * logit_scale(k) / temperature)`` (theirs: the first step at half the logits),
    top-k as theirs. Only the positions decoded now are queried. Their MaskGIT keeps the guidance
    constant (the masked family), their PGM ramps it."""

    name = "halton"
    family = "masked"

    def ramps(self, algorithm) -> bool:
        return algorithm.sampler_family == "partition"

    def order(self, algorithm, prompt, generator=None) -> torch.Tensor:
        fixed = prompt.fixed
        length = fixed.shape[1]
        height, width = algorithm.space.grid or (1, length)
        if height * width != length:
            raise PartgmError(f"the Halton sampler needs {height}x{width} = {height * width} positions, not {length}")
        visit = halton_order(height, width).to(fixed.device).expand_as(fixed)  # [B, L]
        if self.settings.randomize:  # torch.roll per row: visit'[i] = visit[(i - shift) mod L]
            shift = torch.randint(0, length, (fixed.shape[0], 1), generator=generator, device=fixed.device)
            visit = visit.gather(1, (torch.arange(length, device=fixed.device) - shift) % length)
        rank = torch.empty_like(visit).scatter_(1, visit, torch.arange(length, device=fixed.device).expand_as(visit))
        return rank.masked_fill(fixed, -1).argsort(dim=1, stable=True)  # fixed first

    def sample(self, algorithm, model, prompt, options, generator):
        fixed, settings = prompt.fixed, self.settings
        length, steps = fixed.shape[1], options.steps
        if settings.schedule == "authors":
            counts = counts_table(fixed, steps, lambda n: halton_revealed(steps, n))
        else:
            counts = arccos_counts(fixed, steps)
        plan = DecodePlan(fixed, self.order(algorithm, prompt, generator), counts)
        tokens = with_spare_column(prompt.tokens.masked_fill(~fixed, 0))  # [B, L + 1]
        clean = with_spare_column(fixed)
        n_steps = len(plan)
        for k, step in enumerate(progress(plan, options, self.name)):
            packed = (plan.order[:, : step.clean_width], step.clean_valid)
            context = Context(tokens[:, :length], clean[:, :length], prompt.labels, packed)
            logits = self.guided(algorithm, model, context, step.query_positions, options, k, n_steps)
            logits = _step_logits(logits, settings.logit_scale(k, n_steps), options, settings.top_k)
            step.write(tokens, sample_tokens(logits, options.nucleus, generator))
            step.write(clean, torch.ones_like(step.query_valid))
        return tokens[:, :length]


def image_sampler(algorithm: Any, name: str, settings: ImageSampling) -> Sampler:
    """A configured instance of the image sampler ``name`` (confidence / halton) the algorithm offers."""
    cls = type(get_sampler(algorithm, name))
    if not issubclass(cls, ImageSampler):
        raise PartgmError(f"the authors' sampler options apply to confidence and halton, not to '{name}'")
    return cls(settings)


for _cls in (ConfidenceSampler, HaltonSampler):
    register_sampler(_cls)
    register_sampler(_cls, family="partition")
