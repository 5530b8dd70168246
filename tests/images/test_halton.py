"""Halton grid order and the arccos schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from partgm.images.halton import arccos_schedule, halton_order, halton_sequence


def test_halton_sequence_is_the_radical_inverse():
    assert halton_sequence(5, 2) == [0.5, 0.25, 0.75, 0.125, 0.625]
    assert halton_sequence(4, 3) == pytest.approx([1 / 3, 2 / 3, 1 / 9, 4 / 9])


@pytest.mark.parametrize("height,width", [(8, 8), (16, 16), (5, 7), (1, 1), (32, 32)])
def test_halton_order_visits_every_cell_once(height, width):
    order = halton_order(height, width)
    assert order.dtype == torch.long and order.shape == (height * width,)
    assert sorted(order.tolist()) == list(range(height * width))


def _quadrant_shares(order: torch.Tensor, size: int, k: int) -> list[float]:
    rows, cols = order[:k] // size, order[:k] % size
    quadrant = (rows >= size // 2).long() * 2 + (cols >= size // 2).long()
    return [(quadrant == q).float().mean().item() for q in range(4)]


def test_halton_order_is_spread_and_raster_is_not():
    k = 16 * 16 // 4
    assert all(0.2 <= s <= 0.3 for s in _quadrant_shares(halton_order(16, 16), 16, k))
    assert not all(0.2 <= s <= 0.3 for s in _quadrant_shares(torch.arange(256), 16, k))


@pytest.mark.parametrize("steps,n_tokens", [(32, 1024), (8, 64), (12, 64), (64, 64), (1, 10)])
def test_arccos_schedule_sums_and_grows(steps, n_tokens):
    counts = arccos_schedule(steps, n_tokens)
    assert len(counts) == steps and sum(counts) == n_tokens and min(counts) >= 1
    assert all(b >= a - 1 for a, b in itertools.pairwise(counts))  # non-decreasing up to rounding
    assert counts[-1] >= counts[0]


@pytest.mark.parametrize("steps,n_tokens", [(32, 1024), (8, 64), (12, 256)])
def test_arccos_schedule_follows_the_arccos_mask_ratio(steps, n_tokens):
    counts = arccos_schedule(steps, n_tokens)
    for k in range(1, steps):
        masked = 1 - sum(counts[:k]) / n_tokens
        assert masked == pytest.approx(math.acos(k / steps) / (math.pi / 2), abs=steps / n_tokens + 0.01)


def test_arccos_schedule_with_more_steps_than_tokens():
    assert arccos_schedule(5, 3) == [1, 1, 1, 0, 0]
