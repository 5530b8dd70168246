"""Sampling from trained models: ``generate`` picks the sampler of an algorithm.

Every sampler draws tokens from the float64 softmax by Gumbel-max (optionally nucleus filtered) with
the random numbers of ``generator``: the same seed gives the same samples.
"""

from __future__ import annotations

import torch
from torch import nn

from partgm.algorithms.base import Algorithm
from partgm.errors import PartgmError
from partgm.samplers.ar import sample_ar
from partgm.samplers.common import Prompt, make_prompt
from partgm.samplers.mdlm import sample_mdlm
from partgm.samplers.pgm import sample_pgm

# Algorithm name -> its samplers; "auto" is the first.
SAMPLERS: dict[str, tuple[str, ...]] = {
    "pgm": ("uniform", "binomial", "naive"),
    "mdlm": ("ancestral", "fast-ancestral"),
    "mdlm-complement": ("ancestral", "fast-ancestral"),
    "ar": ("ancestral",),
}
_SAMPLE_FNS = {"pgm": sample_pgm, "mdlm": sample_mdlm, "mdlm-complement": sample_mdlm, "ar": sample_ar}


def generate(
    algorithm: Algorithm,
    model: nn.Module,
    batch_size: int,
    length: int,
    steps: int,
    sampler: str = "auto",
    nucleus: float = 1.0,
    generator: torch.Generator | None = None,
    prompt: Prompt | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Sample [batch_size, length] token ids (long) with ``steps`` denoising steps.

    ``prompt`` (default: BOS only) fixes tokens that are kept as given; position 0 must be fixed (BOS).
    ``nucleus`` < 1 keeps the smallest set of tokens whose probability reaches it. ``device`` defaults
    to the model's; ``generator`` must live there. Runs without gradients in eval mode and restores the
    model's mode. Errors in the arguments raise ``PartgmError``.
    """
    choices = SAMPLERS.get(algorithm.name)
    if choices is None:
        raise PartgmError(f"no sampler for algorithm '{algorithm.name}' (choose from {', '.join(SAMPLERS)})")
    sampler = choices[0] if sampler == "auto" else sampler
    if sampler not in choices:
        raise PartgmError(
            f"unknown sampler '{sampler}' for {algorithm.name} (choose from auto, {', '.join(choices)})"
        )
    if steps < 1:
        raise PartgmError(f"steps must be positive, got {steps}")
    if not 0.0 < nucleus <= 1.0:
        raise PartgmError(f"nucleus must be in (0, 1], got {nucleus}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if prompt is None:
        prompt = make_prompt(batch_size, length, algorithm.bos_id, device=device)
    prompt = _checked_prompt(prompt, batch_size, length, algorithm.vocab_size, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _SAMPLE_FNS[algorithm.name](
                algorithm, model, prompt, steps, sampler, nucleus, generator, progress
            )
    finally:
        model.train(was_training)


def _checked_prompt(
    prompt: Prompt, batch_size: int, length: int, vocab_size: int, device: torch.device
) -> Prompt:
    """The prompt on ``device`` after checking its shape, its BOS and its token ids (one host sync)."""
    if prompt.tokens.shape != (batch_size, length) or prompt.fixed.shape != (batch_size, length):
        raise PartgmError(
            f"the prompt is {list(prompt.tokens.shape)} but {batch_size} sequences of length {length} "
            "were asked for"
        )
    tokens, fixed = prompt.tokens.to(device, torch.long), prompt.fixed.to(device, torch.bool)
    if not bool(fixed[:, 0].all()):
        raise PartgmError("position 0 of the prompt must be fixed (it holds BOS)")
    given = tokens[fixed]
    if bool(((given < 0) | (given >= vocab_size)).any()):
        bad = given[(given < 0) | (given >= vocab_size)][0]
        raise PartgmError(f"prompt token id {int(bad)} is outside the vocabulary of {vocab_size} ids")
    return Prompt(tokens, fixed)


__all__ = ["SAMPLERS", "Prompt", "generate", "make_prompt"]
