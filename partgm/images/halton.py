"""Halton orders over a token grid and MaskGIT's arccos decoding schedule (spec section 5)."""

from __future__ import annotations

import itertools
import math

import torch


def halton_sequence(n: int, base: int) -> list[float]:
    """The first ``n`` points of the 1-D Halton sequence: radical inverses of 1, 2, ..., n in ``base``
    (index 0, the degenerate point 0.0, is skipped as in Halton-MaskGIT)."""
    points = []
    for i in range(1, n + 1):
        x, f = 0.0, 1.0
        while i:
            f /= base
            x += f * (i % base)
            i //= base
        points.append(x)
    return points


def halton_order(height: int, width: int) -> torch.Tensor:
    """A fixed visiting order of every cell of a ``height x width`` grid, LongTensor ``[h*w]`` of raster
    indices ``row * width + col``.

    Point i of the 2-D Halton sequence (base 2 for rows, base 3 for columns) names the cell
    ``(floor(halton2 * height), floor(halton3 * width))``; the sequence is walked, repeated cells dropped,
    until every cell has appeared. Consecutive cells are spread over the whole grid (low discrepancy)."""
    n = height * width
    while True:  # walk ever longer prefixes of the sequence until it has visited every cell
        cells = (
            int(r * height) * width + int(c * width)
            for r, c in zip(halton_sequence(n, 2), halton_sequence(n, 3))
        )
        order = list(dict.fromkeys(cells))  # first visits, in order
        if len(order) == height * width:
            return torch.tensor(order, dtype=torch.long)
        n *= 2


def arccos_schedule(steps: int, n_tokens: int) -> list[int]:
    """Tokens decoded at each of ``steps`` steps; they sum to ``n_tokens``.

    MaskGIT's arccos schedule: the fraction still masked after step k (k = 1..steps) is
    ``gamma(k / steps) = arccos(k / steps) / (pi / 2)``, so few tokens are decoded early and many late.
    Every step decodes at least one token when ``steps <= n_tokens``: step k has revealed
    ``k + round((n_tokens - steps) * (1 - gamma(k / steps)))`` tokens in all. With more steps than
    tokens, the first ``n_tokens`` steps decode one token each and the rest none."""
    extra = max(n_tokens - steps, 0)
    revealed = [
        min(k, n_tokens) + round(extra * (1 - math.acos(k / steps) / (math.pi / 2))) for k in range(steps + 1)
    ]
    return [b - a for a, b in itertools.pairwise(revealed)]
