"""Building blocks shared by the DiT trunk and the Partition Transformer.

Shapes: B batch, L (or Lq / Lk) sequence lengths, H hidden size, h heads, d = H / h, C conditioning size.
Attention masks (``AttentionMask``) are boolean, True where a query may attend a key, [B, 1, Lq, Lk].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from partgm.models.group_attention import GroupAttention


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x * (1 + scale) + shift`` with shift/scale [B, H] broadcast over the sequence of x [B, L, H]."""
    return x * (1.0 + scale[:, None]) + shift[:, None]


def sinusoidal_encoding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[...] positions (or times) -> [..., dim] features, cosine half then sine half."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    args = positions.float()[..., None] * freqs
    enc = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(enc, (0, dim % 2))


class TimestepEmbedder(nn.Module):
    """sigma [B] -> conditioning [B, C]: sinusoidal features, then a two-layer MLP."""

    def __init__(self, cond_dim: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_encoding(sigma, self.frequency_dim))


def apply_rotary(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [B, h, L, d] rotated by (cos, sin) [B, 1, L, d]."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """[B, L, H] -> [B, h, L, d]."""
    b, length, hidden = x.shape
    return x.view(b, length, n_heads, hidden // n_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, h, L, d] -> [B, L, H]."""
    b, h, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, h * d)


class AttentionMask:
    """A boolean attention mask prepared once per forward pass and shared by every layer.

    ``allowed`` [B, 1, Lq, Lk] (or broadcastable) is True where a query may attend a key. Queries with no
    visible key (an empty group) are given every key and their output is zeroed, so they are defined and
    finite on every torch version. ``has_key`` [B, 1, Lq, 1] is None when every query is known to see a
    key (e.g. same-group attention, where a token sees itself). The additive float form that SDPA uses
    is built once per dtype instead of once per layer.
    """

    def __init__(self, allowed: torch.Tensor, every_query_has_key: bool = False):
        self.has_key = None if every_query_has_key else allowed.any(dim=-1, keepdim=True)
        self.allowed = allowed if self.has_key is None else allowed | ~self.has_key
        self._bias: dict[torch.dtype, torch.Tensor] = {}

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The additive form: 0 where allowed, -inf elsewhere, in ``dtype``."""
        if dtype not in self._bias:
            zeros = torch.zeros(self.allowed.shape, dtype=dtype, device=self.allowed.device)
            self._bias[dtype] = zeros.masked_fill(~self.allowed, float("-inf"))
        return self._bias[dtype]


class GroupBlocks:
    """Attention for sequences sorted so that each group is contiguous: group 0 first, then group 1.

    ``group0_sizes[b]`` is n0 of sequence b (of ``length``). ``cross`` False: a query attends the keys of
    its own group; True: the keys of the other group (an empty other group gives a zero output, as with
    ``AttentionMask``). Each block is one unmasked SDPA call, so the work is n0^2 + n1^2 (same group) or
    2 n0 n1 (cross) instead of the L^2 of a dense mask, and fused kernels apply.
    """

    def __init__(self, group0_sizes: list[int], length: int, cross: bool):
        self.group0_sizes = group0_sizes
        self.length = length
        self.cross = cross

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
        """q, k, v [B, h, L, d] in sorted order -> [B, h, L, d]. The blocks are views from ``split``, whose
        backward concatenates their gradients once (a slice's backward would write each into a zeroed
        copy of the whole tensor: B x 2 full-size fills and copies per call)."""
        rows = []
        for q_row, k_row, v_row, n0 in zip(q.split(1), k.split(1), v.split(1), self.group0_sizes, strict=True):
            sizes = [n0, self.length - n0]
            qs, ks, vs = (x.split(sizes, dim=2) for x in (q_row, k_row, v_row))
            pieces = []
            for group in (0, 1):
                if sizes[group] == 0:
                    continue
                other = 1 - group if self.cross else group
                if sizes[other] == 0:
                    pieces.append(q_row.new_zeros(1, q.shape[1], sizes[group], v.shape[-1]))
                    continue
                pieces.append(F.scaled_dot_product_attention(qs[group], ks[other], vs[other], dropout_p=dropout))
            rows.append(torch.cat(pieces, dim=2))
        return torch.cat(rows, dim=0)


Mask = AttentionMask | GroupBlocks | GroupAttention  # GroupAttention: sync-free groups (flex / padded / dense)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask | None = None,
    causal: bool = False,
    dropout: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention (PyTorch SDPA): q [B, h, Lq, d], k/v [B, h, Lk, d] -> [B, h, Lq, d].

    A query whose mask row is all False (e.g. the other group is empty) gets an all-zero output."""
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout)
    if isinstance(mask, GroupBlocks | GroupAttention):
        return mask.attend(q, k, v, dropout)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.bias(q.dtype), dropout_p=dropout)
    return out if mask.has_key is None else out * mask.has_key.to(out.dtype)


class MLP(nn.Module):
    """Linear (``fc``) - GELU-tanh - Linear (``proj``)."""

    def __init__(self, hidden: int, ratio: int = 4):
        super().__init__()
        self.fc = nn.Linear(hidden, ratio * hidden)
        self.proj = nn.Linear(ratio * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class AdaLNModulation(nn.Module):
    """Conditioning [B, C] -> n chunks of [B, H]; zero-initialised so every block starts as identity."""

    def __init__(self, cond_dim: int, hidden: int, n_chunks: int):
        super().__init__()
        self.n_chunks = n_chunks
        self.linear = nn.Linear(cond_dim, n_chunks * hidden)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(c).chunk(self.n_chunks, dim=-1)


class KVCache:
    """Keys and values of past positions for one attention layer: [B, h, T, d] each."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class StaleKV:
    """Keys and values of every position from an earlier full pass, [B, h, L, d] each, in which the rows
    of the positions recomputed now (``index`` [B, A]) take their fresh values: what the approximate
    ``dual-cache`` sampler attends. Read-only (same protocol as ``KVCache.append``): the stored tensors
    change only when the sampler refreshes them. Duplicate indices must carry identical values."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor):
        self.k, self.v = k, v
        self.index = index

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh k, v [B, h, A, d] of the ``index`` positions -> every position's [B, h, L, d]."""
        rows = self.index[:, None, :, None].expand_as(k)
        return self.k.scatter(2, rows, k), self.v.scatter(2, rows, v)


class DiTBlock(nn.Module):
    """Pre-LayerNorm transformer block with adaLN shift/scale/gate and self-attention.

    x [B, L, H], c [B, C], rope for the L positions; a prepared ``mask`` or ``causal``. ``dropout`` is
    on the residual branches (as the reference), ``attention_dropout`` on the attention weights.
    """

    def __init__(
        self, hidden: int, n_heads: int, cond_dim: int, mlp_ratio: int = 4, dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm1 = nn.LayerNorm(hidden, bias=False)
        self.attn_qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.norm2 = nn.LayerNorm(hidden, bias=False)
        self.mlp = MLP(hidden, mlp_ratio)
        self.adaLN_modulation = AdaLNModulation(cond_dim, hidden, 6)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor | tuple[torch.Tensor, ...],
        rope: tuple[torch.Tensor, torch.Tensor],
        mask: Mask | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """c: the conditioning [B, C], or this block's six adaLN chunks [B, H] computed beforehand."""
        shift1, scale1, gate1, shift2, scale2, gate2 = c if isinstance(c, tuple) else self.adaLN_modulation(c)
        q, k, v = self.attn_qkv(modulate(self.norm1(x), shift1, scale1)).chunk(3, dim=-1)
        q = apply_rotary(split_heads(q, self.n_heads), rope)
        k = apply_rotary(split_heads(k, self.n_heads), rope)
        v = split_heads(v, self.n_heads)
        if cache is not None and cache.k is not None:
            past = cache.k.shape[2]
            k, v = cache.append(k, v)
            if causal:  # new token n sees every cached key and the new keys up to itself
                n_new = q.shape[2]
                mask = AttentionMask((torch.arange(n_new, device=x.device)[:, None] + past
                                      >= torch.arange(past + n_new, device=x.device))[None, None], True)
                causal = False
        elif cache is not None:
            k, v = cache.append(k, v)
        p, p_attn = (self.dropout, self.attention_dropout) if self.training else (0.0, 0.0)
        attn = self.attn_out(merge_heads(attention(q, k, v, mask, causal, p_attn)))
        x = x + gate1[:, None] * F.dropout(attn, p, self.training)
        mlp = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x + gate2[:, None] * F.dropout(mlp, p, self.training)


class OutputLayer(nn.Module):
    """Final LayerNorm + adaLN shift/scale, then a zero-initialised Linear to the vocabulary."""

    def __init__(self, hidden: int, cond_dim: int, vocab_size: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, bias=False)
        self.adaLN_modulation = AdaLNModulation(cond_dim, hidden, 2)
        self.linear = nn.Linear(hidden, vocab_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        """c: the conditioning [B, C], or the (shift, scale) chunks computed beforehand."""
        shift, scale = c if isinstance(c, tuple) else self.adaLN_modulation(c)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TokenEmbedding(nn.Module):
    """A raw [V, H] embedding table."""

    def __init__(self, vocab_size: int, hidden: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, hidden))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids]


class Conditioning(nn.Module):
    """The adaLN conditioning vector [B, C]: SiLU(TimestepEmbedder(sigma) + class embedding). Text models
    pass sigma = 0 and no labels. With ``num_classes`` > 0 the class table has a null class (id
    ``num_classes``) used for label dropout and classifier-free guidance; missing labels mean null."""

    def __init__(self, cond_dim: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.sigma_map = TimestepEmbedder(cond_dim)
        if num_classes:
            self.class_embedding = nn.Embedding(num_classes + 1, cond_dim)

    def forward(
        self, batch_size: int, device: torch.device, labels: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if sigma is None:
            sigma = torch.zeros(batch_size, device=device)
        c = self.sigma_map(sigma)
        if self.num_classes:
            if labels is None:
                labels = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)
            c = c + self.class_embedding(labels)
        return F.silu(c)
