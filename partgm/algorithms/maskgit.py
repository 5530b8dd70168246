"""MaskGIT (spec section 5): a bidirectional DiT over the token grid with class adaLN, trained to predict
masked tokens at MaskGIT's arccos masking ratio."""

from __future__ import annotations

import math

import torch

from partgm.algorithms.mdlm import MDLMAlgorithm, token_nll


def arccos_mask(shape: tuple[int, int], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """[B, L] bool: per row ``ceil(L * arccos(r) / (pi / 2))`` positions (at least one) chosen uniformly,
    ``r ~ U(0, 1)`` per row: MaskGIT's masking ratio, mean 2 / pi."""
    batch, length = shape
    r = torch.rand(batch, generator=generator, device=device)
    n_masked = (torch.arccos(r) / (math.pi / 2) * length).ceil().long().clamp(1, length)  # [B]
    keys = torch.rand(shape, generator=generator, device=device)
    threshold = keys.sort(dim=1).values.gather(1, n_masked[:, None] - 1)  # the n-th smallest key per row
    return keys <= threshold


class MaskGITAlgorithm(MDLMAlgorithm):
    """MDLM's network and denoiser (mask id N, class adaLN, null class for guidance, label dropout from
    ``train.label_dropout``), trained with MaskGIT's objective: the arccos masking ratio and unweighted
    cross-entropy averaged over the masked tokens (the reference averages over all positions).
    Validation is MDLM's NELBO, so its perplexity bound stays comparable with MDLM's and PGM's."""

    name = "maskgit"
    samplers = ("confidence", "halton", "ancestral", "fast-ancestral")

    def training_loss(self, model, batch, t, generator=None):
        x = batch.tokens
        masked = arccos_mask(x.shape, generator, x.device)
        labels = self.drop_labels(batch.labels, generator)
        nll = token_nll(self.subs_logits(model, torch.where(masked, self.mask_id, x), labels), x)
        return (nll * masked).sum() / masked.sum()

