"""Opt-in, approximate samplers that choose how many positions to decode from the model's confidence:
``threshold`` (Fast-dLLM's rule) and ``eb`` (the entropy-bounded rule of the EB-sampler), for the
partition family (PGM: the decoder queries exactly the remaining positions) and the masked family
(MDLM: logits only at the masked positions).

Each step queries every remaining position, draws a token at each (temperature and nucleus as
``choose_tokens``), and commits:

- ``threshold`` tau: the positions whose largest probability exceeds tau;
- ``eb`` gamma: the lowest-entropy positions, the k-th kept while the entropies of the k - 1 before it
  sum to less than gamma;

and always at least ``ceil(remaining / steps left)`` per row (the most confident first), so a row is
never stuck and ``steps`` caps the network calls. Tau -> 1 (gamma -> 0) with ``steps >= L`` decodes one
token per step, the exact one-at-a-time chain in confidence order.

What they trade: positions committed in the same step are drawn independently given the same context,
so the joint is not the model's (the error grows as tau falls / gamma grows), and the order is chosen by
confidence rather than at random (lower entropy than ancestral sampling). In exchange the number of
network calls adapts to the sequence: few where the model is sure. Each pass decodes all remaining
positions (PGM's decoder cost grows with them). See docs/speed.md.

Shapes: B batch, L length, W remaining positions (padded), N ids.
"""

from __future__ import annotations

import math

import torch

from partgm.algorithms.base import Context
from partgm.errors import PartgmError
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import (
    denoiser_logits,
    remaining_queries,
    sample_categorical,
    token_probs,
    with_spare_column,
)
from partgm.samplers.cost import PlanWidths


class AdaptiveSampler(Sampler):
    """The shared loop (module docstring); subclasses give ``ranked_passes``. ``last_widths``: the
    (clean_width, query_width) of each network call of the last ``sample`` (``len``: calls per sequence,
    as every row of the batch takes part in each call); ``call_counts``: the calls of every ``sample`` so
    far (a benchmark clears it)."""

    family = "masked"
    knob = ""

    def __init__(self, bound: float):
        self.bound = bound
        self.last_widths: PlanWidths = []
        self.call_counts: list[int] = []

    def ranked_passes(self, probs: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """probs [B, W, N] float64 weights, valid [B, W] -> (score [B, W]: higher is decoded first,
        passes [B, W] bool: the rule admits the position)."""
        raise NotImplementedError

    def sample(self, algorithm, model, prompt, options, generator):
        fixed = prompt.fixed
        length = fixed.shape[1]
        tokens = with_spare_column(prompt.tokens.masked_fill(~fixed, 0))  # [B, L + 1]
        clean = with_spare_column(fixed)
        n_clean = fixed.sum(dim=1).tolist()
        self.last_widths = []
        k = 0
        while min(n_clean) < length:
            packed, query, valid = remaining_queries(clean[:, :length], n_clean)
            self.last_widths.append((max(n_clean), query.shape[1]))
            context = Context(tokens[:, :length], clean[:, :length], prompt.labels, packed)
            logits = denoiser_logits(algorithm, model, context, query, options, k / options.steps)
            if options.temperature != 1.0:
                logits = logits.float() / options.temperature
            probs = token_probs(logits, options.nucleus)  # [B, W, N] float64
            values = sample_categorical(probs, generator)  # [B, W]
            score, passes = self.ranked_passes(probs, valid)
            score = score.masked_fill(~valid, float("-inf"))
            rank = torch.empty_like(query).scatter_(
                1, score.argsort(dim=1, descending=True, stable=True),
                torch.arange(query.shape[1], device=query.device).expand_as(query),
            )
            left = max(options.steps - k, 1)
            need = torch.tensor([math.ceil((length - n) / left) for n in n_clean], device=query.device)
            keep = valid & (passes | (rank < need[:, None]))
            where = torch.where(keep, query, length)  # draws not kept land in the spare column
            tokens.scatter_(1, where, values)
            clean.scatter_(1, where, torch.ones_like(keep))
            n_clean = [n + c for n, c in zip(n_clean, keep.sum(dim=1).tolist())]
            k += 1
        self.call_counts.append(k)
        return tokens[:, :length]


def _normalised(probs: torch.Tensor) -> torch.Tensor:
    return probs / probs.sum(dim=-1, keepdim=True)


class ThresholdSampler(AdaptiveSampler):
    """Fast-dLLM's threshold rule: commit every remaining position whose max probability exceeds
    ``threshold`` (in (0, 1]; at least one per step). Approximate, opt-in (module docstring)."""

    name = "threshold"
    knob = "--threshold"

    def __init__(self, threshold: float = 0.9):
        if not 0.0 < threshold <= 1.0:
            raise PartgmError(f"--threshold must be in (0, 1], got {threshold}")
        super().__init__(threshold)

    def ranked_passes(self, probs, valid):
        confidence = _normalised(probs).amax(dim=-1)
        return confidence, confidence > self.bound


class EntropyBoundSampler(AdaptiveSampler):
    """The entropy-bounded rule: in increasing entropy, commit positions while the entropies of those
    before sum to less than ``entropy_bound`` (nats, >= 0; at least one per step). Approximate, opt-in."""

    name = "eb"
    knob = "--entropy-bound"

    def __init__(self, entropy_bound: float = 0.5):
        if not entropy_bound >= 0.0:
            raise PartgmError(f"--entropy-bound must be >= 0, got {entropy_bound}")
        super().__init__(entropy_bound)

    def ranked_passes(self, probs, valid):
        p = _normalised(probs)
        entropy = -(p * p.clamp(min=1e-300).log()).sum(dim=-1).masked_fill(~valid, float("inf"))  # [B, W]
        order = entropy.argsort(dim=1, stable=True)
        before = entropy.gather(1, order).cumsum(dim=1) - entropy.gather(1, order)  # sum of the lower ones
        passes = torch.empty_like(valid).scatter_(1, order, before < self.bound)
        return -entropy, passes


def adaptive_choice(name: str, threshold: float | None, entropy_bound: float | None) -> str | Sampler:
    """``--sampler`` with ``--threshold`` / ``--entropy-bound``: a configured sampler, or ``name``."""
    if threshold is not None and entropy_bound is not None:
        raise PartgmError("give --threshold (sampler threshold) or --entropy-bound (sampler eb), not both")
    for value, cls in ((threshold, ThresholdSampler), (entropy_bound, EntropyBoundSampler)):
        if value is not None:
            if name not in ("auto", cls.name):
                raise PartgmError(f"{cls.knob} is an option of the {cls.name} sampler, not of '{name}'")
            return cls(value)
    return name


for _cls in (ThresholdSampler, EntropyBoundSampler):
    register_sampler(_cls)
    register_sampler(_cls, family="partition")
