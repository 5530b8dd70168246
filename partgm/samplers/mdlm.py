"""MDLM ancestral sampling (also used by complementary-masking MDLM)."""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from partgm.algorithms.mdlm import MDLMAlgorithm
from partgm.samplers.common import DecodePlan, Prompt, sample_tokens, with_spare_column


def subs_logits(
    algorithm: MDLMAlgorithm, model: nn.Module, z: torch.Tensor, index: torch.Tensor | None = None
) -> torch.Tensor:
    """SUBS logits over the N real ids for z [B, L] (with mask ids): [B, L, N], or [B, K, N] at the
    sequence indices ``index`` [B, K]. The mask id N is the last output; dropping it is its -inf logit."""
    return model(z, output_index=index)[..., : algorithm.mask_id]


def sample_mdlm(
    algorithm: MDLMAlgorithm,
    model: nn.Module,
    prompt: Prompt,
    steps: int,
    sampler: str,
    nucleus: float,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """Ancestral sampling on ``t_k = linspace(1, 1e-5, steps + 1)`` plus a final step at ``alpha_s = 1``
    -> tokens [B, L]. Starts from all ``[MASK]`` except the fixed positions of ``prompt``.

    Which positions are unmasked at each step does not depend on the sampled tokens, so it is drawn
    up front (``DecodePlan.binomial``: each masked token w.p. ``(alpha_s - alpha_t) / (1 - alpha_t)``).
    A step that unmasks nothing changes nothing: it is skipped, which is the reference's cached
    ``p_theta`` (the models are not time conditioned) without a host sync per step. So at most
    ``steps + 1`` forward passes, one per step that unmasks a token.
    - ``ancestral``: the reference's cost: every forward scores all L positions and draws ``x0`` from the
      float64 ``p_theta`` over L x N; the draws are kept where tokens are unmasked.
    - ``fast-ancestral``: the same distribution, with logits and draws only at the positions unmasked now.
    """
    fixed = prompt.fixed
    length = fixed.shape[1]
    plan = DecodePlan.binomial(fixed, steps, algorithm.schedule, generator)
    z = with_spare_column(prompt.tokens.masked_fill(~fixed, algorithm.mask_id))  # [B, L + 1]
    for step in tqdm(plan, total=len(plan), disable=not progress, desc=f"mdlm {sampler}"):
        if sampler == "fast-ancestral":
            values = sample_tokens(
                subs_logits(algorithm, model, z[:, :length], step.query_positions), nucleus, generator
            )
        else:
            x0 = sample_tokens(subs_logits(algorithm, model, z[:, :length]), nucleus, generator)  # [B, L]
            values = x0.gather(1, step.query_positions)
        step.write(z, values)
    return z[:, :length]
