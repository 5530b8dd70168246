"""MaskGIT (spec section 5): a bidirectional transformer over the token grid, trained to predict masked
tokens at MaskGIT's arccos masking ratio. The default network and objective are the reference's
(``models.maskgit``); ``model.network=dit`` is partgm's earlier MaskGIT on MDLM's DiT."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from partgm.algorithms.mdlm import MDLMAlgorithm, token_nll
from partgm.errors import PartgmError
from partgm.models import DiT
from partgm.models.config import MaskGITConfig
from partgm.models.maskgit import MaskGITTransformer


def arccos_mask(shape: tuple[int, int], generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """[B, L] bool: per row ``ceil(L * arccos(r) / (pi / 2))`` positions (at least one) chosen uniformly,
    ``r ~ U(0, 1)`` per row: MaskGIT's masking ratio, mean 2 / pi."""
    batch, length = shape
    r = torch.rand(batch, generator=generator, device=device)
    n_masked = (torch.arccos(r) / (math.pi / 2) * length).ceil().long().clamp(1, length)  # [B]
    keys = torch.rand(shape, generator=generator, device=device)
    threshold = keys.sort(dim=1).values.gather(1, n_masked[:, None] - 1)  # the n-th smallest key per row
    return keys <= threshold


def bernoulli_arccos_mask(
    shape: tuple[int, int], generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """[B, L] bool: the reference's ``get_mask_code``: each token masked independently with probability
    ``arccos(r) / (pi / 2)``, ``r ~ U(0, 1)`` per row (a row may be all clean or all masked)."""
    r = torch.rand(shape[0], generator=generator, device=device)
    return torch.rand(shape, generator=generator, device=device) < (torch.arccos(r) / (math.pi / 2))[:, None]


class MaskGITAlgorithm(MDLMAlgorithm):
    """Mask id N, class conditioning with a null class for guidance, label dropout from
    ``train.label_dropout`` (theirs: 0.1). Objective, with the ``reference`` network: Bernoulli arccos
    masking and the cross-entropy over the N + 1 outputs averaged over *all* positions (the clean ones
    too), as the reference; with ``dit``: exact-count masking, loss averaged over the masked tokens.
    Validation is MDLM's NELBO, so its perplexity bound stays comparable with MDLM's and PGM's."""

    name = "maskgit"
    model_config = MaskGITConfig
    samplers = ("confidence", "halton", "ancestral", "fast-ancestral")
    reference = True  # set by build_model from model.network

    def build_model(self, model_cfg: MaskGITConfig) -> nn.Module:
        self.reference = getattr(model_cfg, "network", "dit") == "reference"
        if self.reference:
            if self.space.length < 1:
                raise PartgmError("the reference MaskGIT network learns one position per token: it needs the "
                                  "sequence length (or model.network=dit)")
            return MaskGITTransformer(model_cfg, self.vocab_size, self.space.length, self.space.num_classes)
        return DiT(model_cfg, in_vocab=self.vocab_size + 1, out_vocab=self.vocab_size + 1,
                   num_classes=self.space.num_classes, grid=self.space.grid)

    def training_loss(self, model, batch, t, generator=None):
        x = batch.tokens
        labels = self.drop_labels(batch.labels, generator)
        if self.reference:
            masked = bernoulli_arccos_mask(x.shape, generator, x.device)
            logits = model(torch.where(masked, self.mask_id, x), labels=labels)
            return F.cross_entropy(logits.flatten(0, 1).float(), x.flatten())
        masked = arccos_mask(x.shape, generator, x.device)
        nll = token_nll(self.subs_logits(model, torch.where(masked, self.mask_id, x), labels), x)
        return (nll * masked).sum() / masked.sum()
