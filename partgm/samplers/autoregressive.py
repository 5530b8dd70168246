"""The autoregressive family: left-to-right decoding with a KV cache."""

from __future__ import annotations

import torch
from tqdm import tqdm

from partgm.errors import PartgmError
from partgm.models.flops import dit_forward_flops
from partgm.samplers.base import Sampler, register_sampler
from partgm.samplers.common import choose_tokens
from partgm.samplers.cost import PlanWidths, SamplingCost, Workload


@register_sampler
class KVCacheSampler(Sampler):
    """One forward pass prefills the KV caches with the prompt prefix (positions 0..P-1, the same P in
    every row), then one forward pass per new token. ``steps`` is ignored: an AR model always decodes
    L - P tokens one by one. Needs a causal model with ``new_caches()`` (``DiT(causal=True)``)."""

    name = "ancestral"
    family = "autoregressive"

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost:
        """The prefill of the ``n_fixed`` prefix (logits at its last token, counted dense), then one
        KV-cached token per pass; ``steps`` and ``plan`` do not apply."""
        d, b, p = work.shape, work.batch, work.n_fixed
        flops = dit_forward_flops(d, b, p, work.vocab, n_out=1)
        for i in range(p, work.length - 1):  # token i is fed back to predict i + 1
            flops = flops + dit_forward_flops(d, b, 1, work.vocab, n_past=i)
        n = work.length - p
        return SamplingCost(self.name, flops, n, b * n * work.vocab, None, ["causal prefill counted dense"])

    def sample(self, algorithm, model, prompt, options, generator):
        fixed = prompt.fixed
        batch, length = fixed.shape
        n_prefix = int(fixed[0].sum())
        positions = torch.arange(length, device=fixed.device).expand(batch, length)
        if n_prefix < 1 or not torch.equal(fixed, positions < n_prefix):
            raise PartgmError("the AR sampler supports prefix prompts only (positions 0..P-1 fixed in every row)")
        tokens = prompt.tokens.clone()
        caches = model.new_caches()
        last = torch.full((batch, 1), n_prefix - 1, device=fixed.device)
        logits = model(tokens[:, :n_prefix], positions[:, :n_prefix], caches, output_index=last,
                       labels=prompt.labels)[:, 0]  # [B, N]
        for i in tqdm(range(n_prefix, length), disable=not options.progress, desc=self.name):
            tokens[:, i] = choose_tokens(logits, options, generator)
            if i + 1 < length:
                logits = model(tokens[:, i : i + 1], positions[:, i : i + 1], caches, labels=prompt.labels)[:, 0]
        return tokens
