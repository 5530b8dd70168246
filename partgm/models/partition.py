"""The Partition Transformer: predicts every token from the tokens of the *other* group only.

Tokens carry a group id in {0, 1}. The encoder lets a token attend to its own group; the GroupSwap
layer builds, for each query position, a query that does not depend on the token there and attends to
the other group's encoder outputs; the decoder refines those queries with cross-attention only.
So the logits at position i never depend on x_i nor on any token of i's group.

Two entry points share every weight and every line of the computation:
- ``forward(x, groups)``: training, all L positions of each sequence, both groups.
- ``forward_packed(clean_tokens, clean_positions, query_positions, clean_valid)``: sampling, the
  encoder reads only the clean tokens (group 0) and the decoder only the positions to decode (group 1).
"""

from __future__ import annotations

import torch
from torch import nn

from partgm.config import PartitionConfig
from partgm.models.layers import (
    MLP,
    AdaLNModulation,
    AttentionMask,
    Conditioning,
    DiTBlock,
    GroupBlocks,
    Mask,
    OutputLayer,
    TokenEmbedding,
    apply_rotary,
    attention,
    merge_heads,
    modulate,
    split_heads,
)
from partgm.models.positions import build_positions

Rope = tuple[torch.Tensor, torch.Tensor]
BLOCKS_MIN_LENGTH = 256  # "auto": group blocks on CPU from this length on (measured: see README "Speed")


def other_group_summary(
    h: torch.Tensor, key_group: torch.Tensor, key_valid: torch.Tensor | None, query_group: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per query, the mean or logsumexp over the encoder outputs of the *other* group (0 if it is empty).

    h [B, Lk, H], key_group [B, Lk], key_valid [B, Lk] or None, query_group [B, Lq] -> [B, Lq, H].
    """
    summaries = []
    for g in (0, 1):
        member = key_group == g
        if key_valid is not None:
            member = member & key_valid
        count = member.sum(dim=1)[:, None]  # [B, 1]
        if kind == "mean":
            summary = (h * member[..., None].to(h.dtype)).sum(dim=1) / count.clamp(min=1).to(h.dtype)
        else:
            summary = h.masked_fill(~member[..., None], float("-inf")).logsumexp(dim=1)
            summary = torch.where(count > 0, summary, torch.zeros_like(summary))
        summaries.append(summary)
    stacked = torch.stack(summaries, dim=1)  # [B, 2, H]
    other = (1 - query_group.long())[..., None].expand(-1, -1, h.shape[-1])
    return stacked.gather(1, other)


def query_processor(kind: str, hidden: int) -> nn.Module:
    """GroupSwap's query projection: ``linear``; ``mlp4``, the reference's Linear-SiLU-Linear of width 4H
    (parameters ``0.*`` and ``2.*``, as the reference names them); ``mlp4-gelu``, partgm's earlier
    Linear-GELU-tanh-Linear (``MLP``: ``fc.*`` and ``proj.*``)."""
    if kind == "linear":
        return nn.Linear(hidden, hidden)
    if kind == "mlp4":
        return nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden))
    return MLP(hidden, 4)


class GroupSwap(nn.Module):
    """Queries from position only (learned vector + sinusoidal code [+ other-group summary]); keys and
    values from the raw encoder outputs; output Linear with no residual: the decoder's initial stream."""

    def __init__(self, cfg: PartitionConfig):
        super().__init__()
        hidden = cfg.hidden_size
        self.n_heads = cfg.n_heads
        self.mode = cfg.swap_query_mode
        self.base_embedding = nn.Parameter(torch.randn(1, hidden))  # N(0, 1), as the reference's nn.Embedding
        self.pre_query_norm = nn.LayerNorm(hidden)
        self.query_processor = query_processor(cfg.swap_projection, hidden)
        self.hidden_to_key_value = nn.Linear(hidden, 2 * hidden)
        self.output_linear = nn.Linear(hidden, hidden)

    def forward(
        self,
        h: torch.Tensor,
        key_rope: Rope,
        query_code: torch.Tensor,
        query_rope: Rope,
        mask: Mask | None,
        summary: torch.Tensor | None,
    ) -> torch.Tensor:
        """h [B, Lk, H] encoder outputs, query_code [B, Lq, H] the position code of the queries -> [B, Lq, H]."""
        b, lq, _ = query_code.shape
        q = self.base_embedding.expand(b, lq, -1)
        if "freqs" in self.mode:
            q = q + query_code.to(q.dtype)
        if summary is not None:
            q = q + summary
        q = self.query_processor(self.pre_query_norm(q))
        k, v = self.hidden_to_key_value(h).chunk(2, dim=-1)
        q = apply_rotary(split_heads(q, self.n_heads), query_rope)
        k = apply_rotary(split_heads(k, self.n_heads), key_rope)
        return self.output_linear(merge_heads(attention(q, k, split_heads(v, self.n_heads), mask)))


class CrossAttentionBlock(nn.Module):
    """Decoder block: adaLN-modulated cross-attention to the encoder outputs, then an MLP; no self-attention."""

    def __init__(self, cfg: PartitionConfig):
        super().__init__()
        hidden = cfg.hidden_size
        self.n_heads = cfg.n_heads
        self.dropout, self.attention_dropout = cfg.dropout, cfg.attention_dropout
        self.q_norm1 = nn.LayerNorm(hidden, bias=False)
        self.kv_norm1 = nn.LayerNorm(hidden, bias=False)
        self.attn_q = nn.Linear(hidden, hidden, bias=False)
        self.attn_kv = nn.Linear(hidden, 2 * hidden, bias=False)
        self.attn_out = nn.Linear(hidden, hidden, bias=False)
        self.norm2 = nn.LayerNorm(hidden, bias=False)
        self.mlp = MLP(hidden, cfg.mlp_ratio)
        self.adaLN_modulation = AdaLNModulation(cfg.cond_dim, hidden, 6)

    def forward(
        self, s: torch.Tensor, h: torch.Tensor, c: torch.Tensor, query_rope: Rope, key_rope: Rope, mask: Mask | None
    ) -> torch.Tensor:
        """s [B, Lq, H] stream, h [B, Lk, H] encoder outputs, c [B, C] -> [B, Lq, H]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)
        q = apply_rotary(split_heads(self.attn_q(modulate(self.q_norm1(s), shift1, scale1)), self.n_heads), query_rope)
        k, v = self.attn_kv(self.kv_norm1(h)).chunk(2, dim=-1)
        k = apply_rotary(split_heads(k, self.n_heads), key_rope)
        p, p_attn = (self.dropout, self.attention_dropout) if self.training else (0.0, 0.0)
        attn = self.attn_out(merge_heads(attention(q, k, split_heads(v, self.n_heads), mask, dropout=p_attn)))
        s = s + gate1[:, None] * nn.functional.dropout(attn, p, self.training)
        mlp = self.mlp(modulate(self.norm2(s), shift2, scale2))
        return s + gate2[:, None] * nn.functional.dropout(mlp, p, self.training)


class PartitionTransformer(nn.Module):
    """Encoder (same-group self-attention) -> GroupSwap -> decoder (cross-attention) -> logits over N ids."""

    def __init__(
        self, cfg: PartitionConfig, vocab_size: int, num_classes: int = 0, grid: tuple[int, int] | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.attention_layout = cfg.attention_layout
        hidden = cfg.hidden_size
        self.vocab_embed = TokenEmbedding(vocab_size, hidden)
        self.cond = Conditioning(cfg.cond_dim, num_classes)
        self.positions = build_positions(hidden // cfg.n_heads, cfg.rope_base, grid)
        self.encoder = nn.ModuleList(
            DiTBlock(hidden, cfg.n_heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.n_encoder_blocks)
        )
        self.group_swap = GroupSwap(cfg)
        self.decoder = nn.ModuleList(CrossAttentionBlock(cfg) for _ in range(cfg.n_decoder_blocks))
        self.output_layer = OutputLayer(hidden, cfg.cond_dim, vocab_size)
        self.summary_kind = {"learn+freqs+mean": "mean", "learn+freqs+logsumexp": "logsumexp"}.get(cfg.swap_query_mode)

    def forward(self, x: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Training path. x [B, L] clean ids, groups [B, L] in {0, 1}, labels [B] or None -> logits
        [B, L, N]; the logits at i are a function of the tokens j with groups[j] != groups[i] (and the
        label) only. Any partition is valid."""
        b, length = x.shape
        groups = groups.long()
        c = self.cond(b, x.device, labels)
        if self._uses_group_blocks(x):
            return self._forward_group_blocks(x, groups, c)
        positions = torch.arange(length, device=x.device).expand(b, length)
        same = (groups[:, :, None] == groups[:, None, :])[:, None]  # [B, 1, L, L]
        encoder_mask = AttentionMask(same, every_query_has_key=True)  # a token always sees itself
        return self._run(x, c, positions, groups, None, positions, groups, encoder_mask, AttentionMask(~same))

    def _uses_group_blocks(self, x: torch.Tensor) -> bool:
        if self.attention_layout == "auto":
            return x.device.type == "cpu" and x.shape[1] >= BLOCKS_MIN_LENGTH
        return self.attention_layout == "blocks"

    def _forward_group_blocks(self, x: torch.Tensor, groups: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``forward`` with each sequence sorted so that its groups are contiguous (RoPE and the GroupSwap
        codes keep the true positions): attention runs block by block without a mask. Same logits."""
        order = torch.argsort(groups, dim=1, stable=True)  # [B, L]: group 0 first; the true positions
        sorted_groups = groups.gather(1, order)
        blocks = [GroupBlocks((groups == 0).sum(dim=1).tolist(), x.shape[1], cross) for cross in (False, True)]
        unsort = torch.argsort(order, dim=1)
        return self._run(x.gather(1, order), c, order, sorted_groups, None, order, sorted_groups, *blocks, unsort)

    def forward_packed(
        self,
        clean_tokens: torch.Tensor,
        clean_positions: torch.Tensor,
        query_positions: torch.Tensor,
        clean_valid: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sampling path. clean_tokens / clean_positions [B, Lc] (right-padded; clean_valid [B, Lc] is
        False on padding, None when nothing is padded), query_positions [B, Lq] -> logits [B, Lq, N]
        for the positions to decode. Equal to ``forward`` with groups clean = 0, to-decode = 1."""
        b, lc = clean_tokens.shape
        zeros = torch.zeros(b, lc, dtype=torch.long, device=clean_tokens.device)
        ones = torch.ones_like(query_positions)
        key_mask = None if clean_valid is None else AttentionMask(clean_valid[:, None, None, :])  # [B, 1, 1, Lc]
        c = self.cond(b, clean_tokens.device, labels)
        return self._run(
            clean_tokens, c, clean_positions, zeros, clean_valid, query_positions, ones, key_mask, key_mask
        )

    def _run(
        self,
        tokens: torch.Tensor,
        c: torch.Tensor,
        token_positions: torch.Tensor,
        token_groups: torch.Tensor,
        token_valid: torch.Tensor | None,
        query_positions: torch.Tensor,
        query_groups: torch.Tensor,
        encoder_mask: Mask | None,
        cross_mask: Mask | None,
        unsort: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The shared computation. ``unsort`` [B, Lq], when the queries were permuted, restores their
        order before the (per-token) output layer. c [B, C] is the adaLN conditioning."""
        key_rope = self.positions.rope(token_positions)
        h = self.vocab_embed(tokens)
        for block in self.encoder:
            h = block(h, c, key_rope, mask=encoder_mask)
        summary = None
        if self.summary_kind is not None:
            summary = other_group_summary(h, token_groups, token_valid, query_groups, self.summary_kind)
        query_rope = self.positions.rope(query_positions)
        query_code = self.positions.code(query_positions, h.shape[-1])
        s = self.group_swap(h, key_rope, query_code, query_rope, cross_mask, summary)
        for layer in self.decoder:
            s = layer(s, h, c, query_rope, key_rope, cross_mask)
        if unsort is not None:
            s = s.gather(1, unsort[..., None].expand(-1, -1, s.shape[-1]))
        return self.output_layer(s, c)
