"""The exact denoiser of a known process: ``Algorithm.logits`` answers with the log of the true posterior
marginals (forward-backward of an ``HMMProcess``), so every sampler of a family runs on it unchanged.

With one token per step its samples are exact draws of the process; with fewer steps the only error left
is the sampler's (several tokens decoded at once from their marginals). It presents itself in any family
(``OracleAlgorithm(space, family=...)``): ``partition`` (PGM samplers), ``masked`` (MDLM), ``maskgit`` and
``pgm-image``; the ``cached`` sampler needs a Partition Transformer and refuses it (on an exact denoiser
the cache changes nothing: it equals ``uniform``).

Shapes: B batch, L sequence length, K query positions, N real ids (the HMM's, plus BOS for text).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from partgm.algorithms.base import Algorithm, Context, TokenSpace
from partgm.data.hmm import HMMProcess
from partgm.errors import PartgmError

LOG_ZERO = -1e4  # the logit of an impossible id: finite, so that guidance's (1 + w) c - w u stays defined
# the ways it presents itself -> the algorithm whose sampler family and samplers it takes
FAMILIES = {"partition": "pgm", "masked": "mdlm", "maskgit": "maskgit", "pgm-image": "pgm-image"}


class HMMDenoiser(nn.Module):
    """The process in the data's layout: HMM positions start at ``offset`` (1 after a BOS at position 0);
    ids at or above the process's vocabulary (BOS) have probability 0 there. No trainable weights."""

    def __init__(self, process: HMMProcess, space: TokenSpace):
        super().__init__()
        self.process, self.space = process, space
        self.offset = 0 if space.bos_id is None else 1
        if space.vocab_size < process.vocab or space.length - self.offset < 1:
            raise PartgmError(f"the process (vocabulary {process.vocab}) does not fit the data ({space})")
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # gives the module a device

    def forward(self, tokens: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The training-mode call of a Partition Transformer (the ``naive`` sampler): group 0 is clean."""
        return self.log_marginals(tokens, groups == 0, labels)

    def log_marginals(self, tokens: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor | None,
                      positions: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, N] float64: log p(x_l = v | the clean tokens other than l) at every position, or
        [B, K, N] at ``positions`` [B, K] only."""
        o, vocab = self.offset, self.process.vocab
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        self.process = self.process.to(tokens.device)  # forward-backward runs where the tokens are
        hmm = self.process.log_marginals(tokens[:, o:], clean[:, o:], labels, (positions - o).clamp(min=0))
        out = torch.full((*positions.shape, self.space.vocab_size), LOG_ZERO, dtype=torch.float64,
                         device=tokens.device)
        out[..., :vocab] = hmm.clamp(min=LOG_ZERO)
        if o:  # position 0 holds BOS
            at_bos = positions == 0
            out[at_bos] = LOG_ZERO
            out[..., self.space.bos_id] = torch.where(at_bos, 0.0, LOG_ZERO)
        return out


class OracleAlgorithm(Algorithm):
    """The exact denoiser behind the algorithm interface (see the module docstring). ``model`` is an
    ``HMMDenoiser``; there is nothing to train."""

    name = "oracle"

    def __init__(self, space: TokenSpace, family: str = "partition", schedule: str = "loglinear"):
        if family not in FAMILIES:
            raise PartgmError(f"the exact denoiser runs in the families {', '.join(FAMILIES)}, not '{family}'")
        super().__init__(space, schedule)
        from partgm.algorithms import ALGORITHMS

        like = ALGORITHMS.get(FAMILIES[family])
        self.family = family
        self.sampler_family, self.samplers = like.sampler_family, like.samplers

    def build_model(self, model_cfg) -> nn.Module:
        raise PartgmError("the exact denoiser is not trained: build it with oracle_denoiser(process, space)")

    def training_loss(self, model, batch, t, generator=None):
        raise PartgmError("the exact denoiser is not trained")

    def logits(self, model: nn.Module, context: Context, query_positions: torch.Tensor) -> torch.Tensor:
        return model.log_marginals(context.tokens, clean_mask(context), context.labels, query_positions)


def clean_mask(context: Context) -> torch.Tensor:
    """[B, L] bool: the positions the denoiser may read. Samplers that pack the clean positions
    (``Context.packed``) may leave ``clean`` at the prompt's fixed positions, so the packed set wins."""
    if context.packed is None:
        return context.clean.bool()
    positions, valid = context.packed
    hits = torch.zeros_like(context.clean, dtype=torch.long)  # padded slots add 0 at position 0
    hits.scatter_add_(1, positions, torch.ones_like(positions) if valid is None else valid.long())
    return hits > 0


def oracle_space(process: HMMProcess, length: int) -> TokenSpace:
    """The data layout of a process without a run: text (BOS = id V at position 0) for one class, else a
    square class-conditional grid without BOS."""
    if process.num_classes == 1:
        return TokenSpace(process.vocab + 1, length, bos_id=process.vocab)
    side = math.isqrt(length)
    if side * side != length:
        raise PartgmError(f"a class-conditional process lays out square grids: length {length} is not a square")
    return TokenSpace(process.vocab, length, None, process.num_classes, (side, side))


def oracle_denoiser(process: HMMProcess, space: TokenSpace, family: str = "partition",
                    schedule: str = "loglinear") -> tuple[OracleAlgorithm, HMMDenoiser]:
    """(algorithm, model) of the exact denoiser of ``process`` for data laid out as ``space``."""
    return OracleAlgorithm(space, family, schedule), HMMDenoiser(process, space)
