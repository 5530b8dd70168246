"""The authors' image layout of the Partition Transformer (``model.image_layout=authors``, the default on
a grid): registers + BOS + 1-D positions + raw class embedding; the grid2d layout stays available."""

from __future__ import annotations

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.models import randomize_
from partgm.resolve import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB, GRID, CLASSES = 9, (4, 4), 3


def tiny_image(layout: str = "authors", seed: int = 0):
    cfg = resolve_config(overrides=["algo=pgm-image", "preset=cpu-tiny", f"model.image_layout={layout}"])
    algorithm = get_algorithm("pgm-image", VOCAB, None, length=16, num_classes=CLASSES, grid=GRID)
    return randomize_(algorithm.build_model(cfg.model), std=0.1, seed=seed).eval()


def test_authors_layout_has_registers_bos_and_raw_class_embedding():
    model = tiny_image()
    assert model.prefix.reg_tokens.weight.shape == (2, 64)
    assert model.vocab_embed.embedding.shape[0] == VOCAB + 2 and model.prefix.bos_id == VOCAB + 1
    assert model.output_layer.linear.out_features == VOCAB
    labels = torch.tensor([0, 2, CLASSES])
    c = model.cond(3, torch.device("cpu"), labels)
    assert torch.equal(c, model.cond.class_embedding.weight[labels])  # no SiLU, no time MLP
    grid = tiny_image("grid2d")
    assert grid.prefix is None and grid.vocab_embed.embedding.shape[0] == VOCAB


@pytest.mark.parametrize("attention", ["dense", "blocks"])
def test_authors_logits_depend_on_the_other_group_only(attention):
    model = tiny_image()
    model.attention_layout = attention
    g = torch.Generator().manual_seed(1)
    length = 16
    x = torch.randint(0, VOCAB, (length,), generator=g)
    labels = torch.tensor([1])
    for groups in (torch.randperm(length, generator=g) % 2, torch.zeros(length, dtype=torch.long)):
        variants = x.repeat(length + 1, 1)
        variants[torch.arange(length) + 1, torch.arange(length)] = (x + 1) % VOCAB
        with torch.no_grad():
            logits = model(variants, groups.expand_as(variants), labels=labels.expand(length + 1))
        change = (logits[1:] - logits[0]).abs().amax(dim=-1)  # [changed token j, position i]
        same_group = groups[:, None] == groups[None, :]
        assert change[same_group].max() < 1e-6
        if (~same_group).any():
            assert change[~same_group].min() > 1e-4


def test_authors_first_step_logits_differ_between_positions():
    """With everything in group 1 (nothing generated), the queries still see group 0's register and BOS
    and their 1-D positions: the logits differ from position to position."""
    model = tiny_image()
    with torch.no_grad():
        logits = model(torch.zeros(1, 16, dtype=torch.long), torch.ones(1, 16, dtype=torch.long))
    assert (logits[0, 1:] - logits[0, :1]).abs().amax(dim=-1).min() > 1e-4


def test_authors_packed_path_equals_training_path():
    model = tiny_image()
    g = torch.Generator().manual_seed(2)
    length, n_clean = 16, [0, 3, 9, 15]
    batch, width = len(n_clean), max(n_clean)
    x = torch.randint(0, VOCAB, (batch, length), generator=g)
    labels = torch.tensor([0, 1, 2, CLASSES])
    groups = torch.ones(batch, length, dtype=torch.long)
    clean_tokens = torch.randint(0, VOCAB, (batch, width), generator=g)
    clean_positions = torch.randint(0, length, (batch, width), generator=g)
    clean_valid = torch.arange(width) < torch.tensor(n_clean)[:, None]
    query_positions = torch.zeros(batch, length, dtype=torch.long)
    query_valid = torch.zeros(batch, length, dtype=torch.bool)
    for b, c in enumerate(n_clean):
        perm = torch.randperm(length, generator=g)
        clean, rest = perm[:c], perm[c:]
        groups[b, clean] = 0
        clean_tokens[b, :c], clean_positions[b, :c] = x[b, clean], clean
        n_query = int(torch.randint(1, len(rest) + 1, (), generator=g))
        query_positions[b, :n_query] = rest[:n_query]
        query_valid[b, :n_query] = True
    with torch.no_grad():
        packed = model.forward_packed(clean_tokens, clean_positions, query_positions, clean_valid, labels=labels)
        full = model(x, groups, labels=labels).gather(1, query_positions[..., None].expand(-1, -1, VOCAB))
    assert (packed - full)[query_valid].abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["blocks", "padded"])
def test_authors_group_sorted_layouts_equal_dense(attention):
    model = tiny_image()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, VOCAB, (3, 16), generator=g)
    groups = (torch.rand(3, 16, generator=g) < torch.tensor([[0.0], [0.5], [1.0]])).long()
    labels = torch.tensor([0, 1, CLASSES])
    with torch.no_grad():
        model.attention_layout = "dense"
        dense = model(x, groups, labels=labels)
        model.attention_layout = attention
        other = model(x, groups, labels=labels)
    assert (dense - other).abs().max() < 1e-5
