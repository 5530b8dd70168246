"""DiT trunk: the denoiser of MDLM (bidirectional) and the autoregressive baseline (causal)."""

from __future__ import annotations

import torch
from torch import nn

from partgm.models.config import DiTConfig
from partgm.models.layers import Conditioning, DiTBlock, KVCache, OutputLayer, TokenEmbedding
from partgm.models.positions import build_positions


class DiT(nn.Module):
    """Token ids [B, L] -> logits [B, L, V_out].

    ``in_vocab`` counts every id the network may read (MDLM: N + 1 with the mask id N), ``out_vocab``
    every id it scores. Not time conditioned: the adaLN conditioning is the learned vector of sigma = 0,
    plus a class embedding when ``num_classes`` > 0. ``grid`` (h, w) switches to 2-D positions.
    """

    def __init__(
        self, cfg: DiTConfig, in_vocab: int, out_vocab: int, causal: bool = False, num_classes: int = 0,
        grid: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.causal = causal
        self.vocab_embed = TokenEmbedding(in_vocab, cfg.hidden_size)
        self.cond = Conditioning(cfg.cond_dim, num_classes)
        self.positions = build_positions(cfg.hidden_size // cfg.n_heads, cfg.rope_base, grid)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.hidden_size, cfg.n_heads, cfg.cond_dim, cfg.mlp_ratio, cfg.dropout, cfg.attention_dropout)
            for _ in range(cfg.n_blocks)
        )
        self.output_layer = OutputLayer(cfg.hidden_size, cfg.cond_dim, out_vocab)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        output_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, L] ids at ``positions`` [B, L] (default 0..L-1) -> logits [B, L, V_out].

        With ``caches`` (one per block, causal models only) keys and values are appended to them, for
        KV-cached decoding. With ``output_index`` [B, K] only the logits at those sequence indices are
        computed: [B, K, V_out]. ``labels`` [B] are class ids (class-conditional models; None: null class)."""
        b, length = x.shape
        if positions is None:
            positions = torch.arange(length, device=x.device).expand(b, length)
        h = self.vocab_embed(x)
        c = self.cond(b, x.device, labels)
        rope = self.positions.rope(positions)
        for i, block in enumerate(self.blocks):
            h = block(h, c, rope, causal=self.causal, cache=None if caches is None else caches[i])
        if output_index is not None:
            h = h.gather(1, output_index[..., None].expand(-1, -1, h.shape[-1]))
        return self.output_layer(h, c)

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]
