"""Position encodings, pluggable per data shape: 1-D sequences (text) and h x w grids (image tokens).

Each gives the rotary (RoPE) angles for attention and a sinusoidal code for the GroupSwap queries.
Positions are raster indices in both cases, so samplers and objectives never see the shape.
"""

from __future__ import annotations

import torch
from torch import nn

from partgm.models.layers import sinusoidal_encoding

Rope = tuple[torch.Tensor, torch.Tensor]


def _rope_from_angles(angles: torch.Tensor) -> Rope:
    """angles [B, L, d / 2] -> (cos, sin) [B, 1, L, d] in the rotate-half layout."""
    emb = torch.cat([angles, angles], dim=-1)[:, None]
    return emb.cos(), emb.sin()


class SequencePositions(nn.Module):
    """1-D RoPE over the head dimension and a sinusoidal code of the position."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rope(self, positions: torch.Tensor) -> Rope:
        """positions [B, L] (long) -> (cos, sin), each [B, 1, L, d] in float32."""
        return _rope_from_angles(positions.float()[..., None] * self.inv_freq)

    def code(self, positions: torch.Tensor, dim: int) -> torch.Tensor:
        """positions [B, L] -> [B, L, dim] float32."""
        return sinusoidal_encoding(positions, dim)


class GridPositions(nn.Module):
    """2-D positions of an ``height x width`` grid in raster order: RoPE with half of the rotated pairs
    on the row and half on the column (as 2-D RoPE in vision transformers), and a code that is the
    concatenation of the row's and the column's sinusoidal codes. Needs head_dim divisible by 4."""

    def __init__(self, head_dim: int, grid: tuple[int, int], base: float = 10000.0):
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
        self.width = grid[1]
        quarter = head_dim // 4
        inv_freq = 1.0 / (base ** (torch.arange(quarter, dtype=torch.float32) / quarter))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _row_col(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.div(positions, self.width, rounding_mode="floor"), positions % self.width

    def rope(self, positions: torch.Tensor) -> Rope:
        row, col = self._row_col(positions)
        angles = torch.cat([row.float()[..., None] * self.inv_freq, col.float()[..., None] * self.inv_freq], -1)
        return _rope_from_angles(angles)

    def code(self, positions: torch.Tensor, dim: int) -> torch.Tensor:
        row, col = self._row_col(positions)
        return torch.cat([sinusoidal_encoding(row, dim // 2), sinusoidal_encoding(col, dim - dim // 2)], dim=-1)


def build_positions(head_dim: int, base: float, grid: tuple[int, int] | None) -> nn.Module:
    """``SequencePositions`` for sequences, ``GridPositions`` for an image grid."""
    return SequencePositions(head_dim, base) if grid is None else GridPositions(head_dim, grid, base)
