"""An opt-in, approximate PGM sampler: the encoder cache (``cached``).

The Partition Transformer's encoder is bidirectional over the clean tokens, so the exact samplers
(``uniform``) re-encode every clean token at every step. ``cached`` keeps, for every encoder block, the
keys / values of the tokens already encoded, and each step encodes only the tokens that became clean
at the previous step: they attend the cached keys and themselves, while the older tokens keep the
encoder outputs (and decoder keys / values) they had when they were encoded. Every ``refresh`` steps the
whole clean set is encoded again from scratch (refresh 1: every step, which is exactly ``uniform``, token
for token; refresh 0: never after the first step).

What it trades: the encoder work per step drops from all clean tokens to the new ones (about L / steps),
but older tokens never see the tokens decoded after them (until a refresh), so the conditional
distributions are not the model's: quality (gen PPL, entropy) is the price; see docs/speed.md.

Shapes: B batch, L length, T cached tokens, W tokens decoded per step, H hidden.
"""

from __future__ import annotations

import torch

from partgm.errors import PartgmError
from partgm.models.layers import AttentionMask, KVCache
from partgm.models.partition import Queries, other_group_summary
from partgm.samplers.adaptive import adaptive_choice
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import DecodePlan, choose_tokens, progress, with_spare_column
from partgm.samplers.dual_cache import DualCacheSampler
from partgm.samplers.partition import BinomialSampler, CompiledPacked, UniformSampler


class EncoderCache:
    """The clean tokens encoded so far: per-block encoder ``caches``, their outputs h [B, T, H], positions
    and validity [B, T], and every decoder block's (keys, values) [B, h, T, d] of those outputs."""

    def __init__(self, model, prepared, tokens: torch.Tensor, positions: torch.Tensor,
                 valid: torch.Tensor | None):
        """Encode tokens / positions [B, T] (valid [B, T] or None: all real) from scratch."""
        self.model, self.prepared = model, prepared
        self.caches = [KVCache() for _ in model.encoder]
        rope = model.positions.rope(positions)
        mask = None if valid is None else AttentionMask(valid[:, None, None, :])
        self.h = model.encode(tokens, prepared, rope, mask, self.caches)
        self.positions = positions
        self.valid = torch.ones_like(positions, dtype=torch.bool) if valid is None else valid
        self.mask = mask  # over the cached keys; None when nothing is padded (as ``uniform`` builds it)
        self.keys_values = model.decoder_keys_values(self.h, rope, prepared.kv_weight)

    def extend(self, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor) -> None:
        """Encode new tokens / positions / valid [B, W] against the cache and append them."""
        model = self.model
        self.valid = torch.cat([self.valid, valid], dim=1)
        self.mask = AttentionMask(self.valid[:, None, None, :])
        rope = model.positions.rope(positions)
        h = model.encode(tokens, self.prepared, rope, self.mask, self.caches)
        self.h = torch.cat([self.h, h], dim=1)
        self.positions = torch.cat([self.positions, positions], dim=1)
        new = model.decoder_keys_values(h, rope, self.prepared.kv_weight)
        self.keys_values = [(torch.cat([k, nk], dim=2), torch.cat([v, nv], dim=2))
                            for (k, v), (nk, nv) in zip(self.keys_values, new)]

    def logits(self, query_positions: torch.Tensor) -> torch.Tensor:
        """query_positions [B, W] -> logits [B, W, N] given every cached token."""
        model = self.model
        summary = None
        if model.summary_kind is not None:
            summary = other_group_summary(self.h, torch.zeros_like(self.positions), self.valid,
                                          torch.ones_like(query_positions), model.summary_kind)
        rope = model.positions.rope(self.positions)
        return model.decode(self.h, rope, self.keys_values, self.prepared, Queries(query_positions, mask=self.mask), summary)


class CachedSampler(UniformSampler):
    """``uniform``'s plan and draws with the approximate encoder cache (module docstring); ``refresh`` r:
    re-encode everything every r steps (1: exact, equal to ``uniform``; 0: never). Off by default."""

    name = "cached"
    family = "partition"

    def __init__(self, refresh: int = 4):
        if refresh < 0:
            raise PartgmError(f"refresh must be >= 0 (0: never), got {refresh}")
        super().__init__()
        self.refresh = refresh

    def sample(self, algorithm, model, prompt, options, generator):
        if algorithm.sampler_family != self.family or not hasattr(model, "encode"):
            raise PartgmError(f"the cached sampler is for PGM models (partition family), not '{algorithm.name}'"
                              " (MDLM: --sampler dual-cache)")
        if getattr(model, "prefix", None) is not None:
            raise PartgmError("the cached sampler does not support the authors' image layout "
                              "(model.image_layout=authors); use --sampler uniform or halton")
        if options.guidance > 0.0 and prompt.labels is not None:
            raise PartgmError("the cached sampler has no classifier-free guidance; use --sampler uniform")
        plan: DecodePlan = self.plan(algorithm, prompt, options, generator)
        length = prompt.fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~prompt.fixed, 0))  # [B, L + 1]
        prepared = model.prepare(tokens.shape[0], tokens.device, prompt.labels)
        cache, previous = None, None
        for k, step in enumerate(progress(plan, options, self.name)):
            if cache is None or (self.refresh and k % self.refresh == 0):
                positions = plan.order[:, : step.clean_width]
                cache = EncoderCache(model, prepared, tokens.gather(1, positions), positions, step.clean_valid)
            else:
                cache.extend(tokens.gather(1, previous.query_positions), previous.query_positions,
                             previous.query_valid)
            logits = cache.logits(step.query_positions)
            step.write(tokens, choose_tokens(logits, options, generator))
            previous = step
        return tokens[:, :length]


register_sampler(CachedSampler)


def sampler_choice(
    name: str = "auto", refresh: int | None = None, compile: bool = False, threshold: float | None = None,
    entropy_bound: float | None = None,
) -> str | Sampler:
    """What ``generate`` takes as ``sampler`` for the command-line flags: ``name``, or a configured instance
    for ``--refresh R`` (the ``cached`` sampler), ``--compile`` (``uniform`` / ``binomial``) and
    ``--threshold`` / ``--entropy-bound`` (``partgm.samplers.adaptive``)."""
    if threshold is not None or entropy_bound is not None:
        if refresh is not None or compile:
            raise PartgmError("--threshold / --entropy-bound do not combine with --refresh or --compile")
        return adaptive_choice(name, threshold, entropy_bound)
    if refresh is not None:
        if name not in ("auto", "cached", "dual-cache"):
            raise PartgmError(f"--refresh is an option of the cached (PGM) and dual-cache (MDLM) samplers, not of '{name}'")
        if compile:
            raise PartgmError(f"--compile applies to the uniform and binomial samplers, not to {name}")
        return DualCacheSampler(refresh) if name == "dual-cache" else CachedSampler(refresh)
    if compile:
        if name not in ("auto", "uniform", "binomial"):
            raise PartgmError(f"--compile applies to the uniform and binomial PGM samplers, not to '{name}'")
        return (BinomialSampler if name == "binomial" else UniformSampler)(CompiledPacked())
    return name
