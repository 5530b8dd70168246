"""Autoregressive baseline: the DiT trunk with causal attention and a next-token loss."""

from __future__ import annotations

from torch import nn

from partgm.algorithms.base import Algorithm
from partgm.algorithms.mdlm import token_nll
from partgm.config import ModelConfig
from partgm.models import DiT


class AutoregressiveAlgorithm(Algorithm):
    """Predicts x[1:] from x[:-1]; the BOS at position 0 is given, so L - 1 tokens are scored."""

    name = "ar"
    uses_time = False

    def build_model(self, model_cfg: ModelConfig, length: int) -> nn.Module:
        return DiT(model_cfg, in_vocab=self.vocab_size, out_vocab=self.vocab_size, causal=True)

    def training_loss(self, model, x, t, generator=None):
        return token_nll(model(x[:, :-1]), x[:, 1:]).mean()

    def validation_nelbo(self, model, x, t, generator=None):
        nll = token_nll(model(x[:, :-1]), x[:, 1:])
        return nll.double().sum(), nll.numel()
