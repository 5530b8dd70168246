"""Analytic FLOP counts of the networks (beside them: ``DiT``, ``PartitionTransformer``), to put next to
measured speed; each sampler counts a whole generation with these (``Sampler.flops``).

Convention: one multiply-add is 2 FLOPs. Counted: every matrix product, i.e. every ``nn.Linear``
(2 * rows * in * out; bias adds are not counted) and the two attention products (scores Q K^T and
values P V: 2 * 2 * d per head per (query, key) pair, i.e. ``4 * H`` per pair summed over heads).
This is exactly what ``torch.utils.flop_counter.FlopCounterMode`` reports for these models when SDPA
runs on its math backend (``aten.bmm`` / ``aten.addmm`` / ``aten.mm``); see ``tests/models/test_flop_counts.py``.

Not counted (elementwise or memory-bound, O(L * H) or O(L * V) rather than O(L * H^2)): embedding
look-ups, LayerNorm, adaLN modulate / gates / residuals, RoPE, GELU / SiLU, the attention softmax, mask
and scale, dropout, GroupSwap's sinusoidal codes and other-group summaries, and the samplers' float64
softmax / nucleus / Gumbel-max over the vocabulary. That last one is large for MDLM's reference sampler,
so ``SamplingCost.softmax_elements`` reports its element count (rows x V) separately.

Attention cost is counted as the (query, key) pairs the kernel *computes*: a dense boolean mask costs
every pair (L^2 per row) whatever it allows; the group-block layout costs n0^2 + n1^2 (same group) and
2 n0 n1 (cross); a causal prefill is counted dense (L^2, what the math and masked kernels compute; a
causal flash kernel skips about half); a KV-cached decode step of one token costs (past + 1) pairs.

Shapes and names: B batch, L length, H hidden, C conditioning size, V output ids, N real ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from partgm.models.config import ModelConfig

TIMESTEP_FREQUENCY_DIM = 256  # layers.TimestepEmbedder default

EXCLUDED = (
    "embedding look-ups, LayerNorm, adaLN modulate/gates/residuals, RoPE, activations, attention "
    "softmax/mask/scale, dropout, bias adds, GroupSwap sinusoidal codes and summaries, the samplers' "
    "float64 softmax / top-p / Gumbel-max (reported as softmax_elements)"
)


@dataclass
class Flops:
    """FLOPs split by kind: ``linear`` (every nn.Linear except the vocabulary projection), ``attention``
    (QK^T and PV), ``logits`` (the output Linear to V ids). Floats where an expectation was taken."""

    linear: float = 0
    attention: float = 0
    logits: float = 0

    @property
    def total(self) -> float:
        return self.linear + self.attention + self.logits

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention, self.logits + other.logits)

    def __sub__(self, other: Flops) -> Flops:
        return self + other * -1

    def __mul__(self, k: float) -> Flops:
        return Flops(self.linear * k, self.attention * k, self.logits * k)

    __rmul__ = __mul__

    def as_dict(self) -> dict:
        return {"linear": self.linear, "attention": self.attention, "logits": self.logits, "total": self.total}


@dataclass(frozen=True)
class Dims:
    """The shape numbers the counts need (heads do not matter: h * d = H)."""

    hidden: int
    cond_dim: int = 128
    mlp_ratio: int = 4
    n_blocks: int = 12
    n_encoder_blocks: int = 6
    n_decoder_blocks: int = 6
    swap_projection: str = "linear"

    @classmethod
    def of(cls, cfg: ModelConfig | Dims) -> Dims:
        if isinstance(cfg, Dims):
            return cfg
        default = cls(cfg.hidden_size)
        return cls(cfg.hidden_size, cfg.cond_dim, cfg.mlp_ratio, *(
            getattr(cfg, name, getattr(default, name))
            for name in ("n_blocks", "n_encoder_blocks", "n_decoder_blocks", "swap_projection")
        ))


# ------------------------------------------------------------------------------------------ components


def attention_flops(hidden: int, pairs: float) -> float:
    """Scores and values for ``pairs`` (query, key) pairs summed over the batch: 2 products x 2 x H."""
    return 4 * hidden * pairs


def conditioning_flops(dims: ModelConfig | Dims, batch: int) -> Flops:
    """TimestepEmbedder MLP on [B]: Linear(256, C) and Linear(C, C)."""
    d = Dims.of(dims)
    return Flops(linear=2 * batch * (TIMESTEP_FREQUENCY_DIM * d.cond_dim + d.cond_dim * d.cond_dim))


def adaln_flops(dims: ModelConfig | Dims, batch: int, n_chunks: int) -> Flops:
    """AdaLNModulation: Linear(C, n_chunks * H) on [B, C]."""
    d = Dims.of(dims)
    return Flops(linear=2 * batch * d.cond_dim * n_chunks * d.hidden)


def dit_block_flops(dims: ModelConfig | Dims, batch: int, n_query: int, pairs: float) -> Flops:
    """One DiTBlock on n_query tokens per row; ``pairs`` (query, key) pairs computed over the batch."""
    d = Dims.of(dims)
    hid = d.hidden
    per_token = 2 * (3 * hid * hid + hid * hid + 2 * d.mlp_ratio * hid * hid)  # qkv, out, MLP
    return Flops(linear=batch * n_query * per_token, attention=attention_flops(hid, pairs)) + adaln_flops(d, batch, 6)


def cross_block_flops(dims: ModelConfig | Dims, batch: int, n_query: int, n_key: int, pairs: float) -> Flops:
    """One decoder CrossAttentionBlock: q and out on the queries, kv on the keys, MLP on the queries."""
    d = Dims.of(dims)
    hid = d.hidden
    linear = batch * n_query * 2 * (2 * hid * hid + 2 * d.mlp_ratio * hid * hid) + batch * n_key * 2 * 2 * hid * hid
    return Flops(linear=linear, attention=attention_flops(hid, pairs)) + adaln_flops(d, batch, 6)


def group_swap_flops(dims: ModelConfig | Dims, batch: int, n_query: int, n_key: int, pairs: float) -> Flops:
    """GroupSwap: query processor (Linear or MLP x4) and output Linear on queries, kv Linear on keys."""
    d = Dims.of(dims)
    hid = d.hidden
    processor = 2 * hid * hid if d.swap_projection == "linear" else 2 * 2 * 4 * hid * hid
    linear = batch * n_query * (processor + 2 * hid * hid) + batch * n_key * 2 * 2 * hid * hid
    return Flops(linear=linear, attention=attention_flops(hid, pairs))


def output_layer_flops(dims: ModelConfig | Dims, batch: int, n_positions: float, vocab: int) -> Flops:
    """OutputLayer over n_positions per row with ``vocab`` output ids (its adaLN counted as linear)."""
    d = Dims.of(dims)
    return Flops(logits=2 * batch * n_positions * d.hidden * vocab) + adaln_flops(d, batch, 2)


# ------------------------------------------------------------------------------------------- networks


def dit_forward_flops(
    dims: ModelConfig | Dims, batch: int, n_tokens: int, vocab_out: int, n_past: int = 0, n_out: float | None = None
) -> Flops:
    """``DiT.forward`` on n_tokens new tokens per row that attend n_past cached keys plus the new ones
    (bidirectional / causal prefill: n_past = 0, counted dense; KV-cached decode: n_tokens = 1), logits
    at ``n_out`` positions (default every new token; MDLM fast: the positions unmasked now)."""
    d = Dims.of(dims)
    n_out = n_tokens if n_out is None else n_out
    pairs = batch * n_tokens * (n_past + n_tokens)
    blocks = dit_block_flops(d, batch, n_tokens, pairs) * d.n_blocks
    return conditioning_flops(d, batch) + blocks + output_layer_flops(d, batch, n_out, vocab_out)


def partition_flops(
    dims: ModelConfig | Dims, batch: int, n_enc: int, n_query: int, enc_pairs: float, cross_pairs: float,
    vocab: int,
) -> Flops:
    """The Partition Transformer on n_enc encoder tokens and n_query decoder queries per row, with the
    given (query, key) pairs of the encoder and of the cross attention summed over the batch."""
    d = Dims.of(dims)
    total = conditioning_flops(d, batch) + dit_block_flops(d, batch, n_enc, enc_pairs) * d.n_encoder_blocks
    total = total + group_swap_flops(d, batch, n_query, n_enc, cross_pairs)
    total = total + cross_block_flops(d, batch, n_query, n_enc, cross_pairs) * d.n_decoder_blocks
    return total + output_layer_flops(d, batch, n_query, vocab)


def group_pairs(length: int, group0_sizes: Sequence[int] | torch.Tensor) -> tuple[int, int]:
    """(same-group pairs, cross-group pairs) summed over rows: sum n0^2 + n1^2 and sum 2 n0 n1."""
    sizes = [int(n) for n in (group0_sizes.tolist() if torch.is_tensor(group0_sizes) else group0_sizes)]
    same = sum(n * n + (length - n) ** 2 for n in sizes)
    return same, sum(2 * n * (length - n) for n in sizes)


def partition_forward_flops(
    dims: ModelConfig | Dims,
    batch: int,
    length: int,
    vocab: int,
    layout: str = "dense",
    group0_sizes: Sequence[int] | torch.Tensor | None = None,
) -> Flops:
    """``PartitionTransformer.forward`` (training / naive sampler) on [B, L]. ``layout="dense"``: masked
    attention over all L^2 pairs (also the FlexAttention upper bound); ``"blocks"``: the group-block
    layout, which needs ``group0_sizes`` (n0 per row) and costs n0^2 + n1^2 / 2 n0 n1 per row."""
    if layout == "dense":
        enc_pairs = cross_pairs = batch * length * length
    elif layout == "blocks":
        if group0_sizes is None or len(group0_sizes) != batch:
            raise ValueError("layout='blocks' needs group0_sizes, one per row")
        enc_pairs, cross_pairs = group_pairs(length, group0_sizes)
    else:
        raise ValueError(f"layout must be 'dense' or 'blocks', got {layout!r}")
    return partition_flops(dims, batch, length, length, enc_pairs, cross_pairs, vocab)


def expected_blocks_pairs(batch: int, length: int, p_group1: float) -> tuple[float, float]:
    """Expected (same, cross) pairs of the block layout when each token is in group 1 w.p. p (iid):
    E[n0^2 + n1^2] = L^2 - 2 L (L - 1) p (1 - p), E[2 n0 n1] = 2 L (L - 1) p (1 - p); times B."""
    cross = 2 * length * (length - 1) * p_group1 * (1 - p_group1)
    return batch * (length * length - cross), batch * cross


def partition_packed_flops(
    dims: ModelConfig | Dims, batch: int, clean_width: int, query_width: int, vocab: int
) -> Flops:
    """``PartitionTransformer.forward_packed``: the encoder on clean_width (padded) tokens, GroupSwap and
    the decoder on query_width (padded) queries, logits at the queries. Padding is computed, so counted."""
    enc_pairs = batch * clean_width * clean_width
    cross_pairs = batch * query_width * clean_width
    return partition_flops(dims, batch, clean_width, query_width, enc_pairs, cross_pairs, vocab)


def partition_constant_flops(dims: ModelConfig | Dims, batch: int) -> Flops:
    """The part of a Partition Transformer forward that depends only on the conditioning: the
    TimestepEmbedder MLP and every adaLN Linear (6 chunks per encoder / decoder block, 2 for the output).
    The packed samplers compute it once per generation (``PartitionTransformer.prepare``)."""
    d = Dims.of(dims)
    return (conditioning_flops(d, batch) + adaln_flops(d, batch, 6) * (d.n_encoder_blocks + d.n_decoder_blocks)
            + adaln_flops(d, batch, 2))


def train_step_flops(forward: Flops) -> Flops:
    """The usual estimate of forward + backward: 3 x the forward matmuls (the backward computes the
    gradients of both inputs of every product). Not measured here."""
    return forward * 3
