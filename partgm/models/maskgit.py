"""The reference MaskGIT network (Halton-MaskGIT's ``Transformer``, the paper's MaskGIT baseline):
learned absolute positions, RMSNorm, QK-norm, SwiGLU, adaLN from the class embedding, registers
appended after the codes, an RMSNorm + adaLN head whose weight is tied to the token table.

Parameter names follow the reference's so that its checkpoints map one to one: ``tok_emb``, ``pos_emb``,
``cls_emb``, ``reg_tokens``, ``transformer.layers.{i}.{mlp.1, ln1, attn.{wq,wk,wv,wo}, ln2, ff.{w1,w2,w3}}``,
``last_norm.{norm_final, mlp.1}``; the reference's ``head.bias`` is ``head_bias`` (its ``head.weight`` is ``tok_emb``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from partgm.models.config import MaskGITConfig
from partgm.models.layers import merge_heads, modulate, split_heads


class RMSNorm(nn.Module):
    """``x / rms(x)`` over the last dimension (in float32), times ``weight`` and plus ``bias`` when present."""

    def __init__(self, dim: int, weight: bool = True, bias: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
        if self.weight is not None:
            out = self.weight * out
        return out if self.bias is None else out + self.bias


def swiglu_width(mlp_dim: int, multiple_of: int = 256) -> int:
    """The reference's SwiGLU hidden width: ``2/3`` of ``mlp_dim`` rounded up to a multiple of 256."""
    width = int(2 * mlp_dim / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(dim, weight=False), RMSNorm(dim, weight=False)


class Attention(nn.Module):
    """Bidirectional multi-head attention with RMS-normalised queries and keys (over the full width)."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.qk_norm = QKNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.qk_norm.query_norm(self.wq(x)), self.qk_norm.key_norm(self.wk(x))
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, self.wv(x)))
        p = self.dropout if self.training else 0.0
        out = self.wo(merge_heads(F.scaled_dot_product_attention(q, k, v, dropout_p=p)))
        return F.dropout(out, p, self.training)


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``, no biases, dropout after the gate."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        width = swiglu_width(mlp_dim)
        self.dropout = dropout
        self.w1, self.w3 = nn.Linear(dim, width, bias=False), nn.Linear(dim, width, bias=False)
        self.w2 = nn.Linear(width, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.dropout(F.silu(self.w1(x)) * self.w3(x), self.dropout, self.training))


class Block(nn.Module):
    """adaLN (SiLU -> Linear of the class embedding: shift, scale, gate twice), attention, SwiGLU."""

    def __init__(self, dim: int, n_heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.ln1, self.ln2 = RMSNorm(dim), RMSNorm(dim)
        self.attn = Attention(dim, n_heads, dropout)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.mlp(cond).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(modulate(self.ln1(x), shift1, scale1))
        return x + gate2[:, None] * self.ff(modulate(self.ln2(x), shift2, scale2))


class Encoder(nn.Module):
    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        hidden = cfg.hidden_size
        self.layers = nn.ModuleList(
            Block(hidden, cfg.n_heads, cfg.mlp_ratio * hidden, cfg.dropout) for _ in range(cfg.n_blocks))


class AdaNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm_final = RMSNorm(dim, bias=True)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.mlp(cond).chunk(2, dim=1)
        return modulate(self.norm_final(x), shift, scale)


class MaskGITTransformer(nn.Module):
    """Token ids [B, L] (``vocab_size`` codes + the mask id ``vocab_size``) -> logits [B, L, vocab_size + 1]
    (the mask id's too, as the reference; the algorithm masks it out when sampling)."""

    def __init__(self, cfg: MaskGITConfig, vocab_size: int, length: int, num_classes: int = 0):
        super().__init__()
        hidden = cfg.hidden_size
        self.num_classes = num_classes
        self.cls_emb = nn.Embedding(num_classes + 1, hidden)
        self.tok_emb = nn.Embedding(vocab_size + 1, hidden)
        self.pos_emb = nn.Embedding(length, hidden)
        self.transformer = Encoder(cfg)
        self.last_norm = AdaNorm(hidden)
        self.head_bias = nn.Parameter(torch.zeros(vocab_size + 1))  # the head's weight is tok_emb's
        self.reg_tokens = nn.Embedding(cfg.registers, hidden) if cfg.registers else None
        self._init_weights()

    def _init_weights(self) -> None:
        """The reference's: Xavier-uniform Linears with zero biases, N(0, 0.02) embeddings, zero adaLN."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.transformer.layers:
            nn.init.zeros_(block.mlp[1].weight)
            nn.init.zeros_(block.mlp[1].bias)

    def forward(
        self, x: torch.Tensor, output_index: torch.Tensor | None = None, labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, L], labels [B] or None (the null class) -> logits [B, L, N + 1] ([B, K, N + 1] at the
        indices ``output_index`` [B, K])."""
        b, length = x.shape
        if labels is None:
            labels = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
        cond = self.cls_emb(labels)
        h = self.tok_emb(x) + self.pos_emb.weight[:length]
        if self.reg_tokens is not None:
            h = torch.cat([h, self.reg_tokens.weight.expand(b, -1, -1)], dim=1)
        for block in self.transformer.layers:
            h = block(h, cond)
        h = h[:, :length]
        if output_index is not None:
            h = h.gather(1, output_index[..., None].expand(-1, -1, h.shape[-1]))
        return F.linear(self.last_norm(h, cond), self.tok_emb.weight, self.head_bias)
