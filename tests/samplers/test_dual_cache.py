"""The opt-in MDLM dual cache (``dual-cache`` sampler): refresh 1 equals ``fast-ancestral`` token for token;
the cached keys with fresh rows reproduce the full pass when nothing is stale; other refresh rates are a
(measured) approximation that still decodes every position once; it is never a default."""

from __future__ import annotations

import json

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.errors import PartgmError
from partgm.models import randomize_
from partgm.models.config import DiTConfig
from partgm.models.layers import StaleKV
from partgm.samplers import SamplingOptions, generate, make_prompt, sampler_names
from partgm.samplers.cached import sampler_choice
from partgm.samplers.dual_cache import DualCacheSampler

pytestmark = pytest.mark.usefixtures("one_thread")
V, L = 50, 40


def tiny(std: float = 0.1):
    algorithm = get_algorithm("mdlm", V, V - 1, "loglinear", length=L)
    cfg = DiTConfig(hidden_size=32, n_heads=2, n_blocks=2, cond_dim=16, dropout=0.0)
    return algorithm, randomize_(algorithm.build_model(cfg), std=std, seed=0).eval()


@pytest.mark.parametrize("steps", [5, 16, 64])
def test_refresh_every_step_equals_fast_ancestral(steps):
    algorithm, model = tiny()
    prompt = make_prompt(3, L, V - 1, [3, 4], {30: 7})
    opts = SamplingOptions(steps=steps)
    exact = generate(algorithm, model, prompt, opts, "fast-ancestral", torch.Generator().manual_seed(5))
    cached = generate(algorithm, model, prompt, opts, DualCacheSampler(1), torch.Generator().manual_seed(5))
    assert torch.equal(cached, exact)


def test_fresh_rows_in_the_cached_keys_reproduce_the_full_pass():
    algorithm, model = tiny(std=0.5)  # weights large enough for stale keys to move the logits
    gen = torch.Generator().manual_seed(0)
    before = torch.randint(0, V, (2, L), generator=gen).masked_fill(torch.rand(2, L, generator=gen) < 0.6,
                                                                   algorithm.mask_id)
    changed = torch.stack([torch.randperm(L, generator=gen)[:6] for _ in range(2)])  # decoded since
    after = before.scatter(1, changed, torch.randint(0, V - 1, (2, 6), generator=gen))
    queries = torch.tensor([[0, 1, 2], [5, 6, 0]])
    active = torch.cat([changed, queries], dim=1)
    index = torch.arange(6, 9).expand(2, 3)
    with torch.no_grad():
        exact = model(after, output_index=queries)
        for source, close in ((after, True), (before, False)):  # keys of the current tokens, or stale ones
            caches = model.new_caches()
            model(source, caches=caches)
            stale = [StaleKV(c.k, c.v, active) for c in caches]
            out = model(after.gather(1, active), positions=active, caches=stale, output_index=index)
            if close:
                torch.testing.assert_close(out, exact)
            else:
                assert (out - exact).abs().max() > 1e-3


@pytest.mark.parametrize("refresh", [0, 2, 3])
def test_approximate_settings_decode_every_free_position(refresh):
    algorithm, model = tiny()
    prompt = make_prompt(2, L, V - 1, [3], {20: 9})
    out = generate(algorithm, model, prompt, SamplingOptions(steps=9), DualCacheSampler(refresh),
                   torch.Generator().manual_seed(1))
    assert out.shape == (2, L) and bool((out[:, :2] == torch.tensor([V - 1, 3])).all()) and bool((out[:, 20] == 9).all())
    assert bool(((out >= 0) & (out < algorithm.mask_id)).all())


def test_opt_in_and_clear_errors():
    algorithm, model = tiny()
    assert sampler_names(algorithm)[0] != "dual-cache" and "dual-cache" in sampler_names(algorithm)
    assert isinstance(sampler_choice("dual-cache", refresh=2), DualCacheSampler)
    with pytest.raises(PartgmError, match="refresh"):
        DualCacheSampler(-1)
    pgm = get_algorithm("pgm", V, V - 1, "loglinear", length=L)
    with pytest.raises(PartgmError, match="MDLM"):
        generate(pgm, model, make_prompt(1, L, V - 1, []), SamplingOptions(steps=4), DualCacheSampler(2))


def test_sample_command_with_the_dual_cache(tmp_path):
    from tiny_runs import make_run, word_tokenizer

    from partgm.cli import main

    run = tmp_path / "mdlm"
    make_run(run, "mdlm", word_tokenizer(tmp_path / "tok"), length=16)
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(run), "--sampler", "dual-cache", "--refresh", "2", "--steps", "6",
                 "--num-samples", "3", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["token_ids"]) == 16 and r["sampler"] == "dual-cache" for r in records)
    assert main(["sample", str(run), "--sampler", "dual-cache", "--refresh", "2", "--steps", "6",
                 "--num-samples", "3", "--out", str(out)]) != 0  # an existing output is not replaced
