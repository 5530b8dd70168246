"""PGM for images (spec section 5): the Partition Transformer over the token grid, groups drawn with
MaskGIT's arccos ratio, cross-entropy on both groups."""

from __future__ import annotations

from partgm.algorithms.maskgit import arccos_mask
from partgm.algorithms.mdlm import token_nll
from partgm.algorithms.pgm import PGMAlgorithm


class PGMImageAlgorithm(PGMAlgorithm):
    """``pgm`` with the image recipe: group 1 holds ``ceil(L * arccos(r) / (pi / 2))`` tokens per image
    (``r ~ U(0, 1)``), group 0 the rest; every token is predicted from the other group and the loss is
    the unweighted cross-entropy averaged over all tokens (both groups, as MaskGIT's on its masked
    tokens). Class adaLN, null class and label dropout as ``pgm``; validation is PGM's (= MDLM's) NELBO.
    Its default sampler is ``halton``."""

    name = "pgm-image"
    samplers = ("halton", "confidence", "uniform", "binomial", "naive")

    def training_loss(self, model, batch, t, generator=None):
        x = batch.tokens
        groups = arccos_mask(x.shape, generator, x.device).long()
        labels = self.drop_labels(batch.labels, generator)
        return token_nll(model(x, groups, labels=labels), x).mean()
