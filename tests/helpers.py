"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

from partgm.samplers import SamplingOptions, generate, make_prompt


def sample(algorithm, model, n: int, length: int, steps: int, sampler: str = "auto", nucleus: float = 1.0,
           generator: torch.Generator | None = None, prompt=None) -> torch.Tensor:
    """``generate`` with a BOS-only prompt by default: [n, length] token ids."""
    prompt = prompt if prompt is not None else make_prompt(n, length, algorithm.bos_id)
    return generate(algorithm, model, prompt, SamplingOptions(steps=steps, nucleus=nucleus), sampler, generator)
