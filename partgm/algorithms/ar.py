"""Autoregressive baseline: the DiT trunk with causal attention and a next-token loss."""

from __future__ import annotations

import torch
from torch import nn

from partgm.algorithms.base import Algorithm, Batch, Context
from partgm.algorithms.mdlm import token_nll
from partgm.models import DiT
from partgm.models.config import DiTConfig


class AutoregressiveAlgorithm(Algorithm):
    """Predicts x[1:] from x[:-1]; the BOS at position 0 is given, so L - 1 tokens are scored."""

    name = "ar"
    model_config = DiTConfig
    sampler_family = "autoregressive"
    samplers = ("ancestral",)
    exact_likelihood = True

    def build_model(self, model_cfg: DiTConfig) -> nn.Module:
        return DiT(model_cfg, in_vocab=self.vocab_size, out_vocab=self.vocab_size, causal=True,
                   num_classes=self.space.num_classes, grid=self.space.grid)

    def logits(self, model: nn.Module, context: Context, query_positions: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: the logits at position q read tokens 0..q-1 (query position 0 is invalid)."""
        if bool((query_positions < 1).any()):
            raise ValueError("an autoregressive model predicts positions >= 1 only")
        tokens = context.tokens[:, : int(query_positions.max())]
        return model(tokens, output_index=query_positions - 1, labels=context.labels)

    def sequence_nll(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Exact -log p(x_l | x_<l) [B, L - 1] for positions 1..L-1 (float32)."""
        return token_nll(model(batch.tokens[:, :-1], labels=batch.labels), batch.tokens[:, 1:])

    def training_loss(self, model, batch, t, generator=None):
        batch = Batch(batch.tokens, self.drop_labels(batch.labels, generator))
        return self.sequence_nll(model, batch).mean()

    def validation_terms(self, model, batch, t, uniforms):
        """Exact: the NLL of the L - 1 tokens after BOS per sequence (t and uniforms are not used)."""
        nll = self.sequence_nll(model, batch)
        return nll.double().sum(dim=1), nll.shape[1]
