"""PGM samplers: the efficient packed path (uniform or binomial step sizes) and the naive reference."""

from __future__ import annotations

import torch
from tqdm import tqdm

from partgm.algorithms.pgm import PGMAlgorithm
from partgm.models import PartitionTransformer
from partgm.samplers.common import DecodePlan, Prompt, sample_tokens, with_spare_column


def sample_pgm(
    algorithm: PGMAlgorithm,
    model: PartitionTransformer,
    prompt: Prompt,
    steps: int,
    sampler: str,
    nucleus: float,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """Fill the free positions of ``prompt`` (tokens / fixed [B, L]) -> tokens [B, L].

    Positions are decoded in a random order per row (fixed ones are clean from the start).
    - ``uniform``: ``min(steps, #free)`` steps of (nearly) equal size, exactly one forward pass each.
    - ``binomial``: MDLM's step sizes (``DecodePlan.binomial``); steps where no row decodes cost nothing.
    - ``naive``: as ``uniform``, but through the training-mode network on all L positions (clean = group 0,
      the rest = group 1, unknown tokens read as id 0). It draws exactly the same random numbers as
      ``uniform``, so both give the same tokens up to float rounding of the logits.
    Each step: the encoder reads only the clean tokens (packed, right-padded when rows differ), the
    decoder only the positions decoded now; tokens come from the float64 softmax by Gumbel-max.
    """
    fixed = prompt.fixed
    length = fixed.shape[1]
    if sampler == "binomial":
        plan = DecodePlan.binomial(fixed, steps, algorithm.schedule, generator)
    else:
        plan = DecodePlan.uniform(fixed, steps, generator)
    tokens = with_spare_column(prompt.tokens.masked_fill(~fixed, 0))  # [B, L + 1]
    if sampler == "naive":
        rank = torch.empty_like(plan.order).scatter_(
            1, plan.order, torch.arange(length, device=fixed.device).expand_as(plan.order)
        )
    for step in tqdm(plan, total=len(plan), disable=not progress, desc=f"pgm {sampler}"):
        if sampler == "naive":
            groups = (rank >= step.start[:, None]).long()  # [B, L]: 1 = not clean yet
            logits = model(tokens[:, :length], groups)
            logits = logits.gather(1, step.query_positions[..., None].expand(-1, -1, logits.shape[-1]))
        else:
            clean_positions = plan.order[:, : step.clean_width]
            logits = model.forward_packed(
                tokens.gather(1, clean_positions), clean_positions, step.query_positions, step.clean_valid
            )
        step.write(tokens, sample_tokens(logits, nucleus, generator))
    return tokens[:, :length]
