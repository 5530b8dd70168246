"""The opt-in encoder cache (``cached`` sampler): refresh 1 equals ``uniform`` token for token; other
refresh rates are a (measured) approximation; it is never a default."""

from __future__ import annotations

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.errors import PartgmError
from partgm.models import randomize_
from partgm.models.config import PartitionConfig
from partgm.samplers import SamplingOptions, generate, get_sampler, make_prompt, sampler_names
from partgm.samplers.cached import CachedSampler, EncoderCache

pytestmark = pytest.mark.usefixtures("one_thread")
V, L = 50, 40


def tiny(mode: str = "learn+freqs"):
    algorithm = get_algorithm("pgm", V, V - 1, "loglinear", length=L)
    cfg = PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=2, n_decoder_blocks=2, cond_dim=16,
                          dropout=0.0, swap_query_mode=mode)
    return algorithm, randomize_(algorithm.build_model(cfg), std=0.1, seed=0).eval()


@pytest.mark.parametrize("mode", ["learn+freqs", "learn+freqs+mean"])
@pytest.mark.parametrize("steps", [7, 40])
def test_refresh_every_step_equals_uniform(mode, steps):
    algorithm, model = tiny(mode)
    prompt = make_prompt(3, L, V - 1, [3, 4], {30: 7})  # rows of equal and (binomial-free) unequal widths
    opts = SamplingOptions(steps=steps)
    exact = generate(algorithm, model, prompt, opts, "uniform", torch.Generator().manual_seed(5))
    cached = generate(algorithm, model, prompt, opts, CachedSampler(refresh=1), torch.Generator().manual_seed(5))
    assert torch.equal(cached, exact)


def test_stale_cache_changes_the_logits_and_a_refresh_restores_them():
    _algorithm, model = tiny()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (2, L), generator=gen)
    order = torch.stack([torch.randperm(L, generator=gen) for _ in range(2)])
    q = order[:, 30:35]
    with torch.no_grad():
        prepared = model.prepare(2, x.device)
        cache = EncoderCache(model, prepared, x.gather(1, order[:, :10]), order[:, :10], None)
        cache.extend(x.gather(1, order[:, 10:20]), order[:, 10:20], torch.ones(2, 10, dtype=torch.bool))
        exact = model.forward_packed(x.gather(1, order[:, :20]), order[:, :20], q)
        assert (cache.logits(q) - exact).abs().max() > 1e-4
        fresh = EncoderCache(model, prepared, x.gather(1, order[:, :20]), order[:, :20], None)
        torch.testing.assert_close(fresh.logits(q), exact)


@pytest.mark.parametrize("refresh", [0, 2, 3])
def test_approximate_settings_fill_every_free_position(refresh):
    algorithm, model = tiny()
    prompt = make_prompt(2, L, V - 1, [3])
    out = generate(algorithm, model, prompt, SamplingOptions(steps=9), CachedSampler(refresh),
                   torch.Generator().manual_seed(1))
    assert out.shape == (2, L) and bool((out[:, :2] == torch.tensor([V - 1, 3])).all())
    assert bool(((out >= 0) & (out < V)).all())


def test_opt_in_only_and_errors():
    algorithm, _model = tiny()
    assert sampler_names(algorithm)[0] == "uniform" and "cached" in sampler_names(algorithm)
    assert isinstance(get_sampler(algorithm, "cached"), CachedSampler)
    with pytest.raises(PartgmError, match="refresh"):
        CachedSampler(-1)
    mdlm = get_algorithm("mdlm", V, V - 1, "loglinear", length=L)
    with pytest.raises(PartgmError):
        get_sampler(mdlm, "cached")
