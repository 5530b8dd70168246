"""Model contracts: the Partition Transformer's information flow, its packed sampling path, empty groups;
the causal DiT and its KV cache; the parameter counts of the paper's models.

Tiny models with every parameter randomised (the zero-initialised layers too), so outputs depend on inputs.
"""

from __future__ import annotations

import pytest
import torch

from partgm.algorithms import Batch, get_algorithm
from partgm.models import randomize_
from partgm.resolve import resolve_config

VOCAB = 11
MODES = ("learn", "learn+freqs", "learn+freqs+mean", "learn+freqs+logsumexp")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(algo: str, *overrides: str, vocab: int = VOCAB, seed: int = 0):
    """(algorithm, randomised cpu-tiny model in eval mode)."""
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny", *overrides])
    algorithm = get_algorithm(algo, vocab_size=vocab, bos_id=vocab - 1)
    return algorithm, randomize_(algorithm.build_model(cfg.model), std=0.1, seed=seed).eval()


def one_token_changed(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x [L] -> [L + 1, L]: row 0 is x, row 1 + j is x with token j replaced by a different id."""
    length = x.shape[0]
    out = x.repeat(length + 1, 1)
    shift = torch.randint(1, VOCAB, (length,), generator=generator)
    out[torch.arange(length) + 1, torch.arange(length)] = (x + shift) % VOCAB
    return out


@pytest.mark.parametrize("layout", ["dense", "blocks"])
@pytest.mark.parametrize("projection", ["linear", "mlp4"])
@pytest.mark.parametrize("mode", MODES)
def test_logits_depend_on_the_other_group_only(mode: str, projection: str, layout: str) -> None:
    _, model = tiny("pgm", f"model.swap_query_mode={mode}", f"model.swap_projection={projection}")
    model.attention_layout = layout
    g = torch.Generator().manual_seed(1)
    length = 10
    x = torch.randint(0, VOCAB, (length,), generator=g)
    for groups in (torch.randperm(length, generator=g) % 2, (torch.arange(length) == 3).long()):
        variants = one_token_changed(x, g)
        with torch.no_grad():
            logits = model(variants, groups.expand_as(variants))  # [L + 1, L, V]
        change = (logits[1:] - logits[0]).abs().amax(dim=-1)  # [changed token j, position i]
        same_group = groups[:, None] == groups[None, :]
        assert change[same_group].max() < 1e-6
        assert change[~same_group].min() > 1e-4
        # Rewriting all of i's group (i included) at once changes nothing at i either.
        for g_i in (0, 1):
            rewritten = torch.where(groups == g_i, (x + 1) % VOCAB, x)
            with torch.no_grad():
                both = model(torch.stack([x, rewritten]), groups.expand(2, -1))
            assert (both[0] - both[1])[groups == g_i].abs().max() < 1e-6


@pytest.mark.parametrize(
    "overrides", [(f"model.swap_query_mode={m}",) for m in MODES] + [("model.swap_projection=mlp4",)]
)
def test_packed_path_equals_training_path(overrides: tuple[str, ...]) -> None:
    """Ragged clean sets (0 to L - 1 clean tokens, shuffled, right-padded with junk) and query sets."""
    _, model = tiny("pgm", *overrides)
    g = torch.Generator().manual_seed(2)
    length, n_clean = 12, [0, 3, 7, 11]
    batch, width = len(n_clean), max(n_clean)
    x = torch.randint(0, VOCAB, (batch, length), generator=g)
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
        packed = model.forward_packed(clean_tokens, clean_positions, query_positions, clean_valid)
        full = model(x, groups).gather(1, query_positions[..., None].expand(-1, -1, VOCAB))
    assert (packed - full)[query_valid].abs().max() < 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_group_blocks_equal_the_dense_mask_path(mode: str) -> None:
    """Sorting each sequence by group and attending block by block (no mask) gives the dense-mask logits
    and gradients, for mixed batches with empty groups, t near 0 and near 1, at L = 128."""
    algorithm, model = tiny("pgm", f"model.swap_query_mode={mode}")
    g = torch.Generator().manual_seed(5)
    length = 128
    x = torch.randint(0, VOCAB, (6, length), generator=g)
    t = torch.tensor([1e-3, 0.02, 0.5, 0.5, 0.98, 1.0])
    groups = algorithm.draw_groups(x, t, g)
    groups[0], groups[5] = 0, 1  # an empty group 1 and an empty group 0
    results = {}
    for layout in ("dense", "blocks"):
        model.attention_layout = layout
        model.zero_grad()
        logits = model(x, groups)
        logits.square().mean().backward()
        results[layout] = logits.detach(), [p.grad.clone() for p in model.parameters()]
    (dense, dense_grads), (blocks, block_grads) = results["dense"], results["blocks"]
    assert torch.isfinite(blocks).all()
    assert (dense - blocks).abs().max() < 1e-5
    for a, b in zip(dense_grads, block_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("layout", ["dense", "blocks"])
@pytest.mark.parametrize("mode", MODES)
def test_empty_groups_give_finite_outputs_losses_and_gradients(mode: str, layout: str) -> None:
    algorithm, model = tiny("pgm", f"model.swap_query_mode={mode}")
    model.attention_layout = layout
    model.train()
    g = torch.Generator().manual_seed(3)
    length = 128
    x = torch.randint(0, VOCAB, (4, length), generator=g)
    t = torch.tensor([1e-3, 1e-3, 1.0 - 1e-3, 1.0])
    groups = torch.stack(
        [
            torch.zeros(length, dtype=torch.long),  # all 0: group 1 empty
            torch.ones(length, dtype=torch.long),  # all 1: group 0 empty
            algorithm.draw_groups(x[2:3], t[2:3], g)[0],
            algorithm.draw_groups(x[3:], t[3:], g)[0],
        ]
    )
    for batch in (slice(0, 1), slice(1, 2), slice(None)):  # each kind alone, and mixed in one batch
        model.zero_grad()
        assert torch.isfinite(model(x[batch], groups[batch])).all()
        nll, weight = algorithm.weighted_nll(model, Batch(x[batch]), t[batch], groups[batch])
        loss = (weight * nll).mean() / 2
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()
    loss = algorithm.training_loss(model, Batch(x), torch.full((4,), 1e-3), g)  # group 1 is mostly empty at L = 128
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_causal_dit_ignores_future_tokens() -> None:
    _, model = tiny("ar")
    g = torch.Generator().manual_seed(4)
    length = 10
    variants = one_token_changed(torch.randint(0, VOCAB, (length,), generator=g), g)
    with torch.no_grad():
        logits = model(variants)
    change = (logits[1:] - logits[0]).abs().amax(dim=-1)  # [changed token j, position i]
    future = torch.arange(length)[:, None] > torch.arange(length)[None, :]  # j > i
    assert change[future].max() < 1e-6
    assert change[~future].min() > 1e-4


def test_kv_cached_logits_equal_full_causal_logits() -> None:
    _, model = tiny("ar")
    g = torch.Generator().manual_seed(5)
    batch, length, prefix = 3, 12, 4
    x = torch.randint(0, VOCAB, (batch, length), generator=g)
    positions = torch.arange(length).expand(batch, length)
    caches = model.new_caches()
    with torch.no_grad():
        full = model(x)
        cached = [model(x[:, :prefix], positions[:, :prefix], caches)]
        cached += [model(x[:, i : i + 1], positions[:, i : i + 1], caches) for i in range(prefix, length)]
    assert (torch.cat(cached, dim=1) - full).abs().max() < 1e-5


def test_kv_cache_chunks_of_several_tokens_stay_causal() -> None:
    _, model = tiny("ar")
    x = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(6))
    positions = torch.arange(12).expand(2, 12)
    caches = model.new_caches()
    with torch.no_grad():
        full = model(x)
        cached = [model(x[:, a:b], positions[:, a:b], caches) for a, b in ((0, 4), (4, 9), (9, 12))]
    assert (torch.cat(cached, dim=1) - full).abs().max() < 1e-5


def test_dit_output_index_equals_full_logits() -> None:
    _, model = tiny("mdlm")
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, VOCAB + 1, (2, 12), generator=g)
    index = torch.randint(0, 12, (2, 5), generator=g)
    with torch.no_grad():
        full = model(x)
        selected = model(x, output_index=index)
    assert (selected - full.gather(1, index[..., None].expand(-1, -1, full.shape[-1]))).abs().max() < 1e-6


@pytest.mark.parametrize(
    "algo, preset, paper_millions",
    [("mdlm", "mdlm-small", 169), ("pgm", "pgm-8-8", 203), ("pgm", "pgm-6-6-d1024", 268)],
)
def test_parameter_counts_match_the_paper(algo: str, preset: str, paper_millions: int) -> None:
    """GPT-2 vocabulary (50257 + mask for MDLM), embeddings included; built on the meta device."""
    cfg = resolve_config(overrides=[f"algo={algo}", f"preset={preset}"])
    algorithm = get_algorithm(algo, vocab_size=50257, bos_id=50256)
    with torch.device("meta"):
        model = algorithm.build_model(cfg.model)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{preset}: {millions:.1f}M parameters (paper: {paper_millions}M)")
    assert abs(millions - paper_millions) / paper_millions < 0.05
