"""PGM for images (spec section 5): the Partition Transformer over the token grid, groups drawn with
MaskGIT's arccos ratio, cross-entropy on both groups."""

from __future__ import annotations

from torch import nn

from partgm.algorithms.maskgit import arccos_mask, bernoulli_arccos_mask
from partgm.algorithms.mdlm import token_nll
from partgm.algorithms.pgm import PGMAlgorithm
from partgm.models.config import PartitionConfig


class PGMImageAlgorithm(PGMAlgorithm):
    """``pgm`` with the image recipe: with the authors' layout (``model.image_layout=authors``, the default)
    each token is in group 1 w.p. ``arccos(r) / (pi / 2)`` (``r ~ U(0, 1)`` per image; BOS and a register
    always in group 0), as theirs; with ``grid2d`` group 1 holds exactly ``ceil(L * arccos(r) / (pi / 2))``
    tokens per image. Group 0 is the rest; every token is predicted from the other group and the loss is
    the unweighted cross-entropy averaged over all tokens (both groups, as MaskGIT's on its masked
    tokens). Class adaLN, null class and label dropout as ``pgm``; validation is PGM's (= MDLM's) NELBO.
    Its default sampler is ``halton``."""

    name = "pgm-image"
    samplers = ("halton", "confidence", "uniform", "binomial", "naive")

    bernoulli = True  # set by build_model from model.image_layout

    def build_model(self, model_cfg: PartitionConfig) -> nn.Module:
        self.bernoulli = model_cfg.image_layout == "authors"
        return super().build_model(model_cfg)

    def training_loss(self, model, batch, t, generator=None):
        x = batch.tokens
        groups = (bernoulli_arccos_mask if self.bernoulli else arccos_mask)(x.shape, generator, x.device).long()
        labels = self.drop_labels(batch.labels, generator)
        return token_nll(model(x, groups, labels=labels), x).mean()
