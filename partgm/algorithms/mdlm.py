"""MDLM (masked diffusion, SUBS parameterisation) and its complementary-masking variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partgm.algorithms.base import Algorithm
from partgm.config import ModelConfig
from partgm.models import DiT
from partgm.schedules import MIN_TRAIN_TIME


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [B, L, V], targets [B, L] -> negative log-likelihood [B, L] in float32."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


class MDLMAlgorithm(Algorithm):
    """Tokens are masked independently w.p. ``1 - alpha_t``; the mask id is N (``vocab_size``)."""

    name = "mdlm"

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def build_model(self, model_cfg: ModelConfig, length: int) -> nn.Module:
        return DiT(model_cfg, in_vocab=self.vocab_size + 1, out_vocab=self.vocab_size + 1)

    def logits(self, model: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """SUBS logits for z [B, L] (with mask ids): the mask id can never be predicted. [B, L, N + 1]."""
        logits = model(z)
        return logits.masked_fill(
            torch.arange(logits.shape[-1], device=z.device) == self.mask_id, float("-inf")
        )

    def draw_mask(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """[B, L] bool, True w.p. ``1 - alpha_t`` per token."""
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return u < (1.0 - self.schedule.alpha(t))[:, None]

    def masked_nelbo(
        self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, masked: torch.Tensor
    ) -> torch.Tensor:
        """Per-token NELBO terms [B, L]: ``w(t) * -log p(x_l | z_t)`` at masked positions, 0 elsewhere."""
        z = torch.where(masked, self.mask_id, x)
        nll = token_nll(self.logits(model, z), x)
        return torch.where(masked, self.schedule.loss_weight(t)[:, None] * nll, torch.zeros_like(nll))

    def training_loss(self, model, x, t, generator=None):
        return self.masked_nelbo(model, x, t, self.draw_mask(x, t, generator)).mean()

    def validation_nelbo(self, model, x, t, generator=None):
        terms = self.masked_nelbo(model, x, t, self.draw_mask(x, t, generator))
        return terms.double().sum(), x.numel()


class ComplementaryMDLMAlgorithm(MDLMAlgorithm):
    """Ablation: each batch also holds the complement of z_t (masked and unmasked swapped) at time
    1 - t, so every token is masked in exactly one copy and takes that copy's loss; divided by 2.
    The complement's time is clamped to the training minimum to keep ``w(1 - t)`` finite.
    Validation is plain MDLM's NELBO."""

    name = "mdlm-complement"

    def training_loss(self, model, x, t, generator=None):
        masked = self.draw_mask(x, t, generator)
        t_complement = (1.0 - t).clamp(min=MIN_TRAIN_TIME)
        z = torch.cat([torch.where(masked, self.mask_id, x), torch.where(masked, x, self.mask_id)])
        nll = token_nll(self.logits(model, z), torch.cat([x, x]))
        nll_masked, nll_complement = nll.chunk(2)
        terms = torch.where(
            masked,
            self.schedule.loss_weight(t)[:, None] * nll_masked,
            self.schedule.loss_weight(t_complement)[:, None] * nll_complement,
        )
        return terms.mean() / 2
