"""The PGM objective: one forward pass trains two complementary masked problems."""

from __future__ import annotations

import torch
from torch import nn

from partgm.algorithms.base import Algorithm, Batch, Context
from partgm.algorithms.mdlm import token_nll
from partgm.models import PartitionTransformer
from partgm.models.config import PartitionConfig
from partgm.schedules import MIN_TRAIN_TIME


class PGMAlgorithm(Algorithm):
    """Group 1 ("masked") w.p. ``1 - alpha_t`` per token, else group 0. Every token is predicted from the
    other group: group-1 tokens with weight ``w(t)``, group-0 tokens (masked at rate ``alpha_t`` in the
    complementary problem) with ``-alpha_t' / alpha_t`` (``NoiseSchedule.complement_weight``). Validation
    (the base class's ``validation_terms``) counts group-1 tokens only: exactly MDLM's NELBO estimator."""

    name = "pgm"
    model_config = PartitionConfig
    sampler_family = "partition"
    samplers = ("uniform", "binomial", "naive", "cached", "threshold", "eb", "confidence", "halton")

    def build_model(self, model_cfg: PartitionConfig) -> nn.Module:
        return PartitionTransformer(model_cfg, self.vocab_size, num_classes=self.space.num_classes,
                                    grid=self.space.grid)

    def logits(self, model: nn.Module, context: Context, query_positions: torch.Tensor) -> torch.Tensor:
        """The packed sampling path: the encoder reads only the clean tokens, the decoder only the queries."""
        clean_positions, clean_valid = context.packed_clean()
        return model.forward_packed(
            context.tokens.gather(1, clean_positions), clean_positions, query_positions, clean_valid,
            labels=context.labels,
        )

    def denoise_logprobs(self, model, tokens, clean, labels=None):
        """The training-mode network with groups ``clean -> 0, not clean -> 1``: each non-clean position
        is predicted from the clean ones only (their ids are replaced by 0, never read there)."""
        groups = (~clean).long()
        return model(torch.where(clean, tokens, 0), groups, labels=labels).log_softmax(-1)

    def draw_groups(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """[B, L] long in {0, 1}: 1 w.p. ``1 - alpha_t``."""
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return (u < (1.0 - self.schedule.alpha(t))[:, None]).long()

    def weighted_nll(
        self, model: nn.Module, batch: Batch, t: torch.Tensor, groups: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-token NLL [B, L], per-token weight [B, L]) for a given partition. Group 0's time is kept
        ``1 - MIN_TRAIN_TIME`` away from 1 so that its weight stays finite (``alpha_1`` may be 0)."""
        nll = token_nll(model(batch.tokens, groups, labels=batch.labels), batch.tokens)
        w_group1 = self.schedule.loss_weight(t)[:, None]
        w_group0 = self.schedule.complement_weight(t.clamp(max=1.0 - MIN_TRAIN_TIME))[:, None]
        return nll, torch.where(groups.bool(), w_group1, w_group0)

    def masked_nelbo_terms(self, model, batch, masked, t):
        nll, weight = self.weighted_nll(model, batch, t, masked.long())
        return weight * nll * masked

    def training_loss(self, model, batch, t, generator=None):
        groups = self.draw_groups(batch.tokens, t, generator)
        batch = Batch(batch.tokens, self.drop_labels(batch.labels, generator))
        nll, weight = self.weighted_nll(model, batch, t, groups)
        return (weight * nll).mean() / 2
