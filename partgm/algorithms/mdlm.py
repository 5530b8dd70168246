"""MDLM (masked diffusion, SUBS parameterisation) and its complementary-masking variant."""

from __future__ import annotations

import torch
from torch import nn

from partgm.algorithms.base import Algorithm, Batch, Context, token_nll
from partgm.models import DiT
from partgm.models.config import DiTConfig
from partgm.schedules import MIN_TRAIN_TIME


class MDLMAlgorithm(Algorithm):
    """Tokens are masked independently w.p. ``1 - alpha_t``; the mask id is N (``vocab_size``)."""

    name = "mdlm"
    model_config = DiTConfig
    sampler_family = "masked"
    samplers = ("ancestral", "fast-ancestral", "dual-cache", "threshold", "eb", "confidence", "halton")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def build_model(self, model_cfg: DiTConfig) -> nn.Module:
        return DiT(model_cfg, in_vocab=self.vocab_size + 1, out_vocab=self.vocab_size + 1,
                   num_classes=self.space.num_classes, grid=self.space.grid)

    def subs_logits(
        self, model: nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """SUBS logits for z [B, L] (with mask ids): the mask id can never be predicted. [B, L, N + 1],
        or [B, K, N + 1] at the sequence indices ``index`` [B, K]."""
        logits = model(z, output_index=index, labels=labels)
        return logits.masked_fill(
            torch.arange(logits.shape[-1], device=z.device) == self.mask_id, float("-inf")
        )

    def logits(self, model: nn.Module, context: Context, query_positions: torch.Tensor) -> torch.Tensor:
        z = torch.where(context.clean, context.tokens, self.mask_id)
        return model(z, output_index=query_positions, labels=context.labels)[..., : self.mask_id]

    def draw_mask(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """[B, L] bool, True w.p. ``1 - alpha_t`` per token."""
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return u < (1.0 - self.schedule.alpha(t))[:, None]

    def masked_nelbo_terms(self, model, batch, masked, t):
        x = batch.tokens
        z = torch.where(masked, self.mask_id, x)
        nll = token_nll(self.subs_logits(model, z, batch.labels), x)
        return torch.where(masked, self.schedule.loss_weight(t)[:, None] * nll, torch.zeros_like(nll))

    def training_loss(self, model, batch, t, generator=None):
        masked = self.draw_mask(batch.tokens, t, generator)
        batch = Batch(batch.tokens, self.drop_labels(batch.labels, generator))
        return self.masked_nelbo_terms(model, batch, masked, t).mean()


class ComplementaryMDLMAlgorithm(MDLMAlgorithm):
    """Ablation: each batch also holds the complement of z_t (masked and unmasked swapped), where a token
    is masked at rate ``alpha_t`` and weighs ``-alpha_t' / alpha_t`` (``NoiseSchedule.complement_weight``);
    every token is masked in exactly one copy and takes that copy's loss; divided by 2. t is kept
    ``1 - MIN_TRAIN_TIME`` away from 1 for the complement's weight to stay finite. Validation is plain
    MDLM's NELBO."""

    name = "mdlm-complement"

    def training_loss(self, model, batch, t, generator=None):
        x = batch.tokens
        masked = self.draw_mask(x, t, generator)
        labels = self.drop_labels(batch.labels, generator)
        z = torch.cat([torch.where(masked, self.mask_id, x), torch.where(masked, x, self.mask_id)])
        nll = token_nll(self.subs_logits(model, z, None if labels is None else torch.cat([labels, labels])),
                        torch.cat([x, x]))
        nll_masked, nll_complement = nll.chunk(2)
        terms = torch.where(
            masked,
            self.schedule.loss_weight(t)[:, None] * nll_masked,
            self.schedule.complement_weight(t.clamp(max=1.0 - MIN_TRAIN_TIME))[:, None] * nll_complement,
        )
        return terms.mean() / 2
