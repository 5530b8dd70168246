"""The authors' image layout for the Partition Transformer (``image_layout="authors"``, the default on an
image grid): the sequence the network reads is ``[register(group 1), register(group 0), BOS, codes]``.

- The two learned register tokens (``reg_tokens``) give each group one member that is always present,
  and the BOS token (id ``K + 1``, K data ids; ``K`` itself is the unused mask id of the reference) is
  always in group 0; so at the first sampling step the queries see a non-empty group 0.
- Positions are 1-D over that whole sequence (code i sits at ``i + PREFIX``): 1-D RoPE and the 1-D
  sinusoidal GroupSwap code (``SequencePositions``).
- The conditioning is the raw class embedding (``ClassConditioning``): no time MLP, no SiLU.

The other layout, ``grid2d``, is partgm's earlier one: codes only, 2-D RoPE and codes over the grid, and
``Conditioning`` (SiLU of the time MLP at 0 plus the class embedding)."""

from __future__ import annotations

import torch
from torch import nn

IMAGE_LAYOUTS = ("authors", "grid2d")
N_REGISTERS = 2  # one per group: index 0 is group 1's, index 1 group 0's (the reference's order)
PREFIX = N_REGISTERS + 1  # registers and BOS before the codes


class ClassConditioning(nn.Module):
    """The adaLN conditioning [B, C] as the authors': the raw class embedding (``cls_embed``), with a null
    class (id ``num_classes``) for label dropout and guidance; missing labels mean null."""

    def __init__(self, cond_dim: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.class_embedding = nn.Embedding(num_classes + 1, cond_dim)

    def forward(
        self, batch_size: int, device: torch.device, labels: torch.Tensor | None = None,
        sigma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """labels [B] or None -> [B, C]; ``sigma`` is ignored (the image models have no time input)."""
        if labels is None:
            labels = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)
        return self.class_embedding(labels)


class RegisterPrefix(nn.Module):
    """Builds the authors' ``[registers, BOS, codes]`` inputs for both entry points of the network.

    ``bos_id`` is the row of the token table that holds BOS (``K + 1``)."""

    def __init__(self, hidden: int, bos_id: int):
        super().__init__()
        self.bos_id = bos_id
        self.reg_tokens = nn.Embedding(N_REGISTERS, hidden)
        nn.init.normal_(self.reg_tokens.weight, std=0.02)

    def _bos(self, embed: nn.Module, b: int, device: torch.device) -> torch.Tensor:
        return embed(torch.full((b, 1), self.bos_id, dtype=torch.long, device=device))  # [B, 1, H]

    def training_inputs(self, embed: nn.Module, x: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, L] codes, groups [B, L] -> (inputs [B, L + 3, H], groups [B, L + 3]); positions are
        ``arange(L + 3)``: register 0 in group 1, register 1 and BOS in group 0."""
        b = x.shape[0]
        regs = self.reg_tokens.weight.expand(b, -1, -1)
        h = torch.cat([regs, self._bos(embed, b, x.device), embed(x)], dim=1)
        prefix_groups = torch.tensor([1, 0, 0], dtype=torch.long, device=x.device).expand(b, -1)
        return h, torch.cat([prefix_groups, groups], dim=1)

    def packed_inputs(
        self, embed: nn.Module, tokens: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None,
        query_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """The clean tokens / positions [B, Lc] (valid [B, Lc] or None), query_positions [B, Lq] ->
        (inputs [B, Lc + 2, H], positions [B, Lc + 2], valid or None, query positions): group 0's
        register and BOS come first and every code position is shifted by ``PREFIX``."""
        b = tokens.shape[0]
        reg0 = self.reg_tokens.weight[1:].expand(b, -1, -1)
        h = torch.cat([reg0, self._bos(embed, b, tokens.device), embed(tokens)], dim=1)
        head = torch.tensor([1, 2], dtype=positions.dtype, device=positions.device).expand(b, -1)
        positions = torch.cat([head, positions + PREFIX], dim=1)
        if valid is not None:
            valid = torch.cat([torch.ones(b, 2, dtype=torch.bool, device=valid.device), valid], dim=1)
        return h, positions, valid, query_positions + PREFIX
