"""The interface every training algorithm (MDLM, complementary MDLM, PGM, AR) implements.

An algorithm owns the objective and knows which network it trains; the training engine, the
evaluation code and the CLI only talk to this interface.
"""

from __future__ import annotations

import torch
from torch import nn

from partgm.config import ModelConfig
from partgm.schedules import NoiseSchedule


class Algorithm:
    """Base class. ``vocab_size`` is N, the number of real token ids (no mask id included)."""

    name = "base"
    uses_time = True  # False for AR: the engine still draws t, the algorithm ignores it

    def __init__(self, vocab_size: int, bos_id: int, schedule: NoiseSchedule):
        self.vocab_size = vocab_size
        self.bos_id = bos_id
        self.schedule = schedule

    def build_model(self, model_cfg: ModelConfig, length: int) -> nn.Module:
        """A freshly initialised network for sequences of ``length`` tokens."""
        raise NotImplementedError

    def training_loss(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scalar loss to minimise: mean over all tokens of x [B, L] (long) at times t [B]."""
        raise NotImplementedError

    def validation_nelbo(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """(sum of per-token NELBO terms in float64, number of tokens) for x [B, L] at times t [B].

        ``exp(total sum / total count)`` over a split is the validation perplexity (an upper bound)."""
        raise NotImplementedError
