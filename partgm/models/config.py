"""The networks' configs: what every family shares (``ModelConfig``), the DiT trunk's (``DiTConfig``)
and the Partition Transformer's (``PartitionConfig``). Each algorithm names its family's class
(``Algorithm.model_config``); the run config holds one of them as its ``model`` section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from partgm.bounds import AT_LEAST_1, FRACTION, Checked, Range
from partgm.errors import PartgmError


@dataclass
class ModelConfig(Checked):
    """What every network family shares."""

    hidden_size: int = 768
    n_heads: int = 12
    cond_dim: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.1  # residual dropout (the reference recipe's only dropout)
    attention_dropout: float = 0.0  # dropout on the attention weights, off in the reference
    rope_base: float = 10000.0

    ranges: ClassVar[dict[str, Range]] = {
        "hidden_size": AT_LEAST_1, "n_heads": AT_LEAST_1, "cond_dim": AT_LEAST_1, "mlp_ratio": AT_LEAST_1,
        "dropout": FRACTION, "attention_dropout": FRACTION, "rope_base": Range(1.0, low_open=True, says="> 1"),
    }

    def check(self, where: str) -> None:
        super().check(where)
        if self.hidden_size % self.n_heads:
            raise PartgmError(
                f"{where}.hidden_size={self.hidden_size} is not divisible by {where}.n_heads={self.n_heads}"
            )
        if (self.hidden_size // self.n_heads) % 2:
            raise PartgmError(f"{where}.hidden_size / {where}.n_heads must be even (rotary embeddings)")


@dataclass
class DiTConfig(ModelConfig):
    """The DiT trunk (MDLM, AR, MaskGIT): ``n_blocks`` self-attention blocks."""

    n_blocks: int = 12

    ranges: ClassVar[dict[str, Range]] = {**ModelConfig.ranges, "n_blocks": AT_LEAST_1}


@dataclass
class PartitionConfig(ModelConfig):
    """The Partition Transformer: encoder / decoder depths, the GroupSwap queries, and how training-mode
    attention is laid out: ``dense`` (one boolean mask), ``blocks`` (group-sorted, one SDPA per block; reads
    the group sizes on the host), ``flex`` (group-sorted FlexAttention block mask, sync-free: CUDA; on CPU
    forward only), ``padded`` (sync-free two-block padded layout); ``auto``: blocks on CPU from L 256, flex
    on CUDA (when torch has FlexAttention), dense elsewhere."""

    n_encoder_blocks: int = 6
    n_decoder_blocks: int = 6
    swap_query_mode: Literal["learn", "learn+freqs", "learn+freqs+mean", "learn+freqs+logsumexp"] = (
        "learn+freqs"
    )
    # mlp4: the reference's Linear-SiLU-Linear (4H); mlp4-gelu: partgm's earlier GELU-tanh variant.
    swap_projection: Literal["linear", "mlp4", "mlp4-gelu"] = "linear"
    attention_layout: Literal["auto", "dense", "blocks", "flex", "padded"] = "auto"
    # image grids only (models/image_layout.py): the authors' [registers, BOS, codes] with 1-D positions
    # and the raw class embedding, or partgm's earlier codes-only 2-D grid layout
    image_layout: Literal["authors", "grid2d"] = "authors"

    ranges: ClassVar[dict[str, Range]] = {
        **ModelConfig.ranges, "n_encoder_blocks": AT_LEAST_1, "n_decoder_blocks": AT_LEAST_1,
    }


@dataclass
class MaskGITConfig(DiTConfig):
    """``maskgit``'s network: ``reference`` (``models.maskgit``; its objective is the reference's too:
    Bernoulli arccos masking, cross-entropy on every position) or ``dit`` (MDLM's DiT with 2-D RoPE, the
    exact-count masking and the loss on masked tokens only: partgm's earlier MaskGIT). ``registers``:
    learned tokens appended after the codes (reference network only; theirs: 1). ``cond_dim`` is unused
    by the reference network (its conditioning has the hidden width)."""

    network: Literal["reference", "dit"] = "reference"
    registers: int = 1

    ranges: ClassVar[dict[str, Range]] = {**DiTConfig.ranges, "registers": Range(0, says=">= 0")}


MODEL_FAMILIES: tuple[type[ModelConfig], ...] = (DiTConfig, PartitionConfig, MaskGITConfig)

# Model fields added after runs were saved without them: the value that rebuilds those runs' networks.
LEGACY_MODEL_DEFAULTS = {"image_layout": "grid2d", "network": "dit"}
