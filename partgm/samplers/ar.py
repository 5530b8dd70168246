"""Autoregressive sampling with a KV cache."""

from __future__ import annotations

import torch
from tqdm import tqdm

from partgm.algorithms.ar import AutoregressiveAlgorithm
from partgm.errors import PartgmError
from partgm.models import DiT
from partgm.samplers.common import Prompt, sample_tokens


def sample_ar(
    algorithm: AutoregressiveAlgorithm,
    model: DiT,
    prompt: Prompt,
    steps: int,
    sampler: str,
    nucleus: float,
    generator: torch.Generator | None,
    progress: bool,
) -> torch.Tensor:
    """Left-to-right decoding -> tokens [B, L]: one forward pass prefills the KV caches with the prompt
    prefix (positions 0..P-1, the same P in every row), then one forward pass per new token.
    ``steps`` is ignored: an AR model always decodes L - P tokens one by one."""
    fixed = prompt.fixed
    batch, length = fixed.shape
    n_prefix = int(fixed[0].sum())
    positions = torch.arange(length, device=fixed.device).expand(batch, length)
    if not torch.equal(fixed, positions < n_prefix):
        raise PartgmError("the AR sampler supports prefix prompts only (positions 0..P-1 fixed in every row)")
    tokens = prompt.tokens.clone()
    caches = model.new_caches()
    last = torch.full((batch, 1), n_prefix - 1, device=fixed.device)
    logits = model(tokens[:, :n_prefix], positions[:, :n_prefix], caches, output_index=last)[:, 0]  # [B, N]
    for i in tqdm(range(n_prefix, length), disable=not progress, desc="ar"):
        tokens[:, i] = sample_tokens(logits, nucleus, generator)
        if i + 1 < length:
            logits = model(tokens[:, i : i + 1], positions[:, i : i + 1], caches)[:, 0]
    return tokens
