"""The Partition Transformer: predicts every token from the tokens of the *other* group only.

Tokens carry a group id in {0, 1}. The encoder lets a token attend to its own group; GroupSwap builds per
query position a query independent of the token there, attending to the other group's encoder outputs; the
decoder refines it with cross-attention only. So the logits at i never depend on i's group.

Two entry points share every weight and line: ``forward(x, groups)``: training, all L positions, both groups;
- ``forward_packed(clean_tokens, clean_positions, query_positions, clean_valid)``: sampling, the
  encoder reads only the clean tokens (group 0) and the decoder only the positions to decode (group 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from partgm.models.config import PartitionConfig
from partgm.models.group_attention import flex_available
from partgm.models.group_summary import other_group_summary, query_processor
from partgm.models.image_layout import PREFIX, ClassConditioning, RegisterPrefix
from partgm.models.layers import (
    MLP,
    AdaLNModulation,
    AttentionMask,
    Conditioning,
    DiTBlock,
    GroupAttention,
    GroupBlocks,
    KVCache,
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


@dataclass(frozen=True)
class Keys:
    """The encoder's side: tokens [B, Lk] at ``positions`` [B, Lk] in ``groups`` [B, Lk]; ``valid`` [B, Lk]
    False on padding (None: none); ``mask``: the encoder's self-attention mask (None: every key)."""

    tokens: torch.Tensor
    positions: torch.Tensor
    groups: torch.Tensor
    valid: torch.Tensor | None = None
    mask: Mask | None = None


@dataclass(frozen=True)
class Queries:
    """The decoder's side: ``positions`` [B, Lq] to predict, their ``groups`` [B, Lq] (read by the
    other-group summary only), ``mask``: the cross-attention mask to the keys (None: every key);
    ``unsort`` [B, Lq], when the queries were permuted, restores their order before the output layer."""

    positions: torch.Tensor
    groups: torch.Tensor | None = None
    mask: Mask | None = None
    unsort: torch.Tensor | None = None


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

    def keys_values(self, h: torch.Tensor, key_rope: Rope) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, Lk, H] encoder outputs -> this block's (rotated keys, values) [B, h, Lk, d]."""
        k, v = self.attn_kv(self.kv_norm1(h)).chunk(2, dim=-1)
        return apply_rotary(split_heads(k, self.n_heads), key_rope), split_heads(v, self.n_heads)

    def folded_kv_weight(self) -> torch.Tensor:
        """[2H, H]: ``attn_kv`` with the LayerNorm weight of ``kv_norm1`` folded in, so that
        ``attn_kv(kv_norm1(h)) == F.linear(layer_norm(h), folded)`` (no affine in ``layer_norm``)."""
        return self.attn_kv.weight * self.kv_norm1.weight[None, :]

    def forward(
        self,
        s: torch.Tensor,
        h: torch.Tensor,
        key_rope: Rope,
        modulation: torch.Tensor | tuple[torch.Tensor, ...],
        query_rope: Rope,
        mask: Mask | None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """s [B, Lq, H] stream, h [B, Lk, H] encoder outputs, the conditioning c [B, C] or this block's six
        adaLN chunks [B, H] -> [B, Lq, H]. ``kv``: this block's ``keys_values(h)`` computed beforehand (None:
        here; inside the forward, where FSDP2 has gathered the weights)."""
        if kv is None:
            kv = self.keys_values(h, key_rope)
        if not isinstance(modulation, tuple):
            modulation = self.adaLN_modulation(modulation)
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation
        q = apply_rotary(split_heads(self.attn_q(modulate(self.q_norm1(s), shift1, scale1)), self.n_heads), query_rope)
        p, p_attn = (self.dropout, self.attention_dropout) if self.training else (0.0, 0.0)
        attn = self.attn_out(merge_heads(attention(q, *kv, mask, dropout=p_attn)))
        s = s + gate1[:, None] * nn.functional.dropout(attn, p, self.training)
        mlp = self.mlp(modulate(self.norm2(s), shift2, scale2))
        return s + gate2[:, None] * nn.functional.dropout(mlp, p, self.training)


@dataclass
class Prepared:
    """What depends only on the conditioning (class labels; text: nothing), for the packed path computed
    once per ``generate``: c [B, C]; per encoder block, decoder block and the output layer its adaLN
    chunks (each [B, H]), or c itself (the training path: each block computes them in its own forward,
    where FSDP2 has gathered its weights); ``kv_weight`` [n_dec * 2H, H] the decoder blocks' key/value
    Linears with their LayerNorm weights folded in (one matmul for all blocks; None: per block)."""

    c: torch.Tensor
    encoder: list[torch.Tensor | tuple[torch.Tensor, ...]]
    decoder: list[torch.Tensor | tuple[torch.Tensor, ...]]
    output: torch.Tensor | tuple[torch.Tensor, ...]
    kv_weight: torch.Tensor | None = None


class PartitionTransformer(nn.Module):
    """Encoder (same-group self-attention) -> GroupSwap -> decoder (cross-attention) -> logits over N ids.
    On a ``grid`` with ``image_layout`` authors it reads ``[registers, BOS, codes]`` (``models.image_layout``)."""

    def __init__(
        self, cfg: PartitionConfig, vocab_size: int, num_classes: int = 0, grid: tuple[int, int] | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.attention_layout = cfg.attention_layout
        hidden = cfg.hidden_size
        authors = grid is not None and cfg.image_layout == "authors"
        # authors: the token table also holds the reference's mask id (N, unused) and BOS (N + 1)
        self.vocab_embed = TokenEmbedding(vocab_size + 2 if authors else vocab_size, hidden)
        self.prefix = RegisterPrefix(hidden, vocab_size + 1) if authors else None
        self.cond = (ClassConditioning if authors else Conditioning)(cfg.cond_dim, num_classes)
        self.positions = build_positions(hidden // cfg.n_heads, cfg.rope_base, None if authors else grid)
        self.encoder = nn.ModuleList(
            DiTBlock(hidden, cfg.n_heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.n_encoder_blocks)
        )
        self.group_swap = GroupSwap(cfg)
        self.decoder = nn.ModuleList(CrossAttentionBlock(cfg) for _ in range(cfg.n_decoder_blocks))
        self.output_layer = OutputLayer(hidden, cfg.cond_dim, vocab_size)
        self.summary_kind = {"learn+freqs+mean": "mean", "learn+freqs+logsumexp": "logsumexp"}.get(cfg.swap_query_mode)
        self._memo: dict | None = None  # ``reusing_prepared``: (batch, device, labels) -> (labels, Prepared)

    def forward(self, x: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Training path. x [B, L] clean ids, groups [B, L] in {0, 1}, labels [B] or None -> logits
        [B, L, N]; the logits at i are a function of the tokens j with groups[j] != groups[i] (and the
        label) only. Any partition is valid."""
        b, length = x.shape
        groups = groups.long()
        c = self.prepare(b, x.device, labels, precompute=False)
        layout, inputs = self.layout_for(x), x
        if self.prefix is not None:  # [B, L + 3, H] embeddings; the prefix's logits are dropped below
            inputs, groups = self.prefix.training_inputs(self.vocab_embed, x, groups)
            length += PREFIX
        if layout != "dense":
            logits = self._forward_group_blocks(inputs, groups, c, layout)
        else:
            positions = torch.arange(length, device=x.device).expand(b, length)
            same = (groups[:, :, None] == groups[:, None, :])[:, None]  # [B, 1, L, L]
            encoder_mask = AttentionMask(same, every_query_has_key=True)  # a token always sees itself
            keys = Keys(inputs, positions, groups, mask=encoder_mask)
            logits = self._run(keys, Queries(positions, groups, AttentionMask(~same)), c)
        return logits if self.prefix is None else logits[:, PREFIX:]

    def layout_for(self, x: torch.Tensor) -> str:
        """The training-mode attention layout for x [B, L]: ``attention_layout`` with ``auto`` resolved."""
        if self.attention_layout != "auto":
            return self.attention_layout
        if x.device.type == "cuda" and flex_available():
            return "flex"
        return "blocks" if x.device.type == "cpu" and x.shape[1] >= BLOCKS_MIN_LENGTH else "dense"

    def _forward_group_blocks(self, x: torch.Tensor, groups: torch.Tensor, c: Prepared, layout: str) -> torch.Tensor:
        """``forward`` with each sequence sorted so that its groups are contiguous (RoPE and the GroupSwap
        codes keep the true positions), so attention skips the other group's block. ``blocks``: one
        unmasked SDPA per block (group sizes read on the host); ``flex`` / ``padded``: ``GroupAttention``,
        no host sync. Same logits."""
        order = torch.argsort(groups, dim=1, stable=True)  # [B, L]: group 0 first; the true positions
        sorted_groups = groups.gather(1, order)
        if layout == "blocks":
            sizes = (groups == 0).sum(dim=1).tolist()
            masks = [GroupBlocks(sizes, x.shape[1], cross) for cross in (False, True)]
        else:
            masks = [GroupAttention(sorted_groups, cross, backend=layout, flex_sort=False) for cross in (False, True)]
        unsort = torch.argsort(order, dim=1)
        index = order if x.dim() == 2 else order[..., None].expand(-1, -1, x.shape[-1])  # ids or embeddings
        keys = Keys(x.gather(1, index), order, sorted_groups, mask=masks[0])
        return self._run(keys, Queries(order, sorted_groups, masks[1], unsort), c)

    def prepare(
        self, batch: int, device: torch.device, labels: torch.Tensor | None = None, precompute: bool = True
    ) -> Prepared:
        """The per-sequence constants (``Prepared``) for ``batch`` rows with ``labels`` [B] or None;
        ``precompute`` False: only c (the training path)."""
        c = self.cond(batch, device, labels)
        if not precompute:
            return Prepared(c, [c] * len(self.encoder), [c] * len(self.decoder), c)
        kv_weight = None
        if len(self.decoder):
            kv_weight = torch.cat([layer.folded_kv_weight() for layer in self.decoder])
        return Prepared(
            c,
            [block.adaLN_modulation(c) for block in self.encoder],
            [layer.adaLN_modulation(c) for layer in self.decoder],
            self.output_layer.adaLN_modulation(c),
            kv_weight,
        )

    def forward_packed(
        self,
        clean_tokens: torch.Tensor,
        clean_positions: torch.Tensor,
        query_positions: torch.Tensor,
        clean_valid: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        prepared: Prepared | None = None,
    ) -> torch.Tensor:
        """Sampling path. clean_tokens / clean_positions [B, Lc] (right-padded; clean_valid [B, Lc] is
        False on padding, None when nothing is padded), query_positions [B, Lq] -> logits [B, Lq, N]
        for the positions to decode. Equal to ``forward`` with groups clean = 0, to-decode = 1.
        ``prepared``: ``prepare(B, device, labels)`` computed once for many calls (then labels is unused)."""
        b, inputs = clean_tokens.shape[0], clean_tokens
        if self.prefix is not None:  # group 0's register and BOS before the clean codes
            inputs, clean_positions, clean_valid, query_positions = self.prefix.packed_inputs(
                self.vocab_embed, clean_tokens, clean_positions, clean_valid, query_positions)
        zeros = torch.zeros(clean_positions.shape, dtype=torch.long, device=clean_tokens.device)
        ones = torch.ones_like(query_positions)
        key_mask = None if clean_valid is None else AttentionMask(clean_valid[:, None, None, :])  # [B, 1, 1, Lc]
        if prepared is None:
            prepared = self._memoized_prepare(b, clean_tokens.device, labels)
        keys = Keys(inputs, clean_positions, zeros, clean_valid, key_mask)
        return self._run(keys, Queries(query_positions, ones, key_mask), prepared)

    @contextmanager
    def reusing_prepared(self) -> Iterator[None]:
        """Within it (inference only: ``generate`` enters it), ``forward_packed`` computes ``prepare`` once
        per (batch size, device, labels tensor) and reuses it: the conditioning vector and every adaLN
        modulation are the same at every sampling step. Labels are matched by identity (a new tensor,
        e.g. the guidance batch built each step, is prepared again: correct, just not reused)."""
        self._memo = {}
        try:
            yield
        finally:
            self._memo = None

    def _memoized_prepare(self, batch: int, device: torch.device, labels: torch.Tensor | None) -> Prepared:
        if self._memo is None or torch.is_grad_enabled():
            return self.prepare(batch, device, labels)
        key = (batch, str(device), None if labels is None else id(labels))
        if key not in self._memo:
            self._memo[key] = (labels, self.prepare(batch, device, labels))  # keeps labels alive: ids stay unique
        return self._memo[key][1]

    def decoder_keys_values(
        self, h: torch.Tensor, key_rope: Rope, kv_weight: torch.Tensor | None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every decoder block's (rotated keys, values) [B, h, Lk, d] of the encoder outputs h [B, Lk, H]:
        per block, or with ``kv_weight`` (``Prepared``) as one matmul and one rotation for all blocks."""
        if kv_weight is None:
            return [layer.keys_values(h, key_rope) for layer in self.decoder]
        b, lk, hidden = h.shape
        n, heads = len(self.decoder), self.cfg.n_heads
        normed = F.layer_norm(h, (hidden,), eps=self.decoder[0].kv_norm1.eps)
        kv = F.linear(normed, kv_weight).view(b, lk, n, 2, heads, hidden // heads)
        kv = kv.permute(3, 0, 2, 4, 1, 5)  # [2, B, n, h, Lk, d]
        d = hidden // heads  # explicit: Lk may be 0 (no clean token yet, e.g. an image grid without BOS)
        k = apply_rotary(kv[0].reshape(b, n * heads, lk, d), key_rope).view(b, n, heads, lk, d)
        return [(k[:, i], kv[1, :, i]) for i in range(n)]

    def _run(self, keys: Keys, queries: Queries, prepared: Prepared) -> torch.Tensor:
        """The shared computation: encode ``keys``, answer ``queries`` -> logits [B, Lq, N].
        ``prepared``: the conditioning's constants."""
        key_rope = self.positions.rope(keys.positions)
        h = self.encode(keys.tokens, prepared, key_rope, keys.mask)
        summary = None
        if self.summary_kind is not None:
            summary = other_group_summary(h, keys.groups, keys.valid, queries.groups, self.summary_kind)
        keys_values = None if prepared.kv_weight is None else self.decoder_keys_values(h, key_rope, prepared.kv_weight)
        return self.decode(h, key_rope, keys_values, prepared, queries, summary)

    def encode(
        self, tokens: torch.Tensor, prepared: Prepared, rope: Rope, mask: Mask | None,
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """The encoder on tokens [B, Lk] -> outputs [B, Lk, H]. With ``caches`` (one per block) the tokens
        also attend the keys/values already in them (``mask`` then covers cached + new keys), and theirs
        are appended (the approximate encoder cache of ``samplers.cached``)."""
        h = tokens if tokens.dim() == 3 else self.vocab_embed(tokens)
        for i, (block, modulation) in enumerate(zip(self.encoder, prepared.encoder)):
            h = block(h, modulation, rope, mask=mask, cache=None if caches is None else caches[i])
        return h

    def decode(
        self,
        h: torch.Tensor,
        key_rope: Rope,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None,
        prepared: Prepared,
        queries: Queries,
        summary: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """GroupSwap, decoder and output layer: encoder outputs h [B, Lk, H] (keys_values from
        ``decoder_keys_values``, or None: each block computes its own), ``queries`` (positions [B, Lq])
        -> logits [B, Lq, N]; ``summary`` [B, Lq, H]: the other-group summary, when the model has one."""
        query_rope = self.positions.rope(queries.positions)
        query_code = self.positions.code(queries.positions, h.shape[-1])
        s = self.group_swap(h, key_rope, query_code, query_rope, queries.mask, summary)
        for i, (layer, modulation) in enumerate(zip(self.decoder, prepared.decoder)):
            kv = None if keys_values is None else keys_values[i]
            s = layer(s, h, key_rope, modulation, query_rope, queries.mask, kv)
        if queries.unsort is not None:
            s = s.gather(1, queries.unsort[..., None].expand(-1, -1, s.shape[-1]))
        return self.output_layer(s, prepared.output)
