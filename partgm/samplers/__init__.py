"""Sampling from trained models: ``generate`` runs the sampler of an algorithm's family.

Every sampler draws tokens from the float64 softmax by Gumbel-max (optionally nucleus filtered) with
the random numbers of ``generator``: the same seed gives the same samples.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from partgm.errors import PartgmError
from partgm.precision import PRECISIONS, autocast_for

# register the built-in samplers (each algorithm declares its own, default first: ``Algorithm.samplers``)
from partgm.samplers import adaptive, autoregressive, cached, dual_cache, images, masked, partition  # noqa: F401
from partgm.samplers.base import SAMPLER_FAMILIES, Sampler, get_sampler, register_sampler, sampler_names
from partgm.samplers.common import DecodePlan, Prompt, SamplingOptions, make_prompt


def generate(
    algorithm,
    model: nn.Module,
    prompt: Prompt,
    options: SamplingOptions | None = None,
    sampler: str | Sampler = "auto",
    generator: torch.Generator | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """Sample token ids [B, L] (long) that keep the fixed positions of ``prompt`` (tokens / fixed [B, L],
    labels [B]; see ``make_prompt``) and fill the others.

    ``sampler`` is a name of the algorithm's family (``auto``: its default) or a ``Sampler``. Runs on the
    prompt's device (``generator`` must live there) without gradients in eval mode, and restores the
    model's mode. ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32`` or ``bf16``;
    the token draw is always the float64 softmax. Per-sequence constants of the network (the
    conditioning and its adaLN modulations) are computed once per call where the model offers
    ``reusing_prepared``. Errors in the arguments raise ``PartgmError``.
    """
    if precision not in PRECISIONS:
        raise PartgmError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    options = options or SamplingOptions()
    chosen = sampler if isinstance(sampler, Sampler) else get_sampler(algorithm, sampler)
    prompt = _checked_prompt(algorithm, prompt)
    was_training = model.training
    model.eval()
    try:
        reuse = getattr(model, "reusing_prepared", nullcontext)
        with torch.no_grad(), autocast_for(prompt.tokens.device, precision), reuse():
            return chosen.sample(algorithm, model, prompt, options, generator)
    finally:
        model.train(was_training)


def _checked_prompt(algorithm, prompt: Prompt) -> Prompt:
    """The prompt after checking its shape, BOS, token ids, labels and the model's context (one sync)."""
    tokens, fixed, labels = prompt.tokens, prompt.fixed, prompt.labels
    if tokens.dim() != 2 or fixed.shape != tokens.shape:
        raise PartgmError(f"the prompt's tokens {list(tokens.shape)} and fixed {list(fixed.shape)} must be [B, L]")
    length = algorithm.space.length
    if length and tokens.shape[1] > length:
        raise PartgmError(f"cannot sample {tokens.shape[1]} tokens: the model's context is {length}")
    tokens, fixed = tokens.long(), fixed.bool()
    if algorithm.bos_id is not None and not bool(fixed[:, 0].all()):
        raise PartgmError("position 0 of the prompt must be fixed (it holds BOS)")
    given = tokens[fixed]
    bad = given[(given < 0) | (given >= algorithm.vocab_size)]
    if bad.numel():
        raise PartgmError(f"prompt token id {int(bad[0])} is outside the vocabulary of {algorithm.vocab_size} ids")
    if labels is not None:
        n_classes = algorithm.space.num_classes
        if not n_classes:
            raise PartgmError("this model is not class-conditional: sample without labels")
        if labels.shape != (tokens.shape[0],) or bool(((labels < 0) | (labels > n_classes)).any()):
            raise PartgmError(f"labels must be [B] class ids in 0..{n_classes - 1} (or {n_classes}: no class)")
    return Prompt(tokens, fixed, labels)


__all__ = [
    "SAMPLER_FAMILIES", "DecodePlan", "Prompt", "Sampler", "SamplingOptions", "generate", "get_sampler",
    "make_prompt", "register_sampler", "sampler_names",
]
