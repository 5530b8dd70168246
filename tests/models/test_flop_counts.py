"""Analytic FLOPs (partgm.models.flops, Sampler.flops) against torch.utils.flop_counter.FlopCounterMode on tiny models.

On CPU the fused SDPA kernel (aten._scaled_dot_product_flash_attention_for_cpu) is not registered with
FlopCounterMode, so it would count 0 attention FLOPs; under the math backend SDPA is two aten.bmm calls
(QK^T and PV) that it counts as 2 * B * h * Lq * Lk * d each, exactly the analytic attention term.
Every comparison below is therefore exact (integer equality)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import sample
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from partgm.algorithms import ALGORITHMS
from partgm.models.config import DiTConfig, PartitionConfig
from partgm.models.flops import Dims, dit_forward_flops, partition_forward_flops, partition_packed_flops
from partgm.resolve import PRESETS
from partgm.samplers import get_sampler
from partgm.samplers.common import DecodePlan, make_prompt
from partgm.samplers.cost import Workload, expected_binomial_plan, plan_widths, uniform_plan_widths
from partgm.schedules import LogLinearSchedule

B, L, N = 3, 32, 50  # N real ids; the PGM / AR networks score N ids, MDLM's N + 1
DIT_CFG = DiTConfig(hidden_size=64, n_heads=2, n_blocks=2, cond_dim=32, dropout=0.0)
PARTITION_CFG = PartitionConfig(hidden_size=64, n_heads=2, n_encoder_blocks=2, n_decoder_blocks=1, cond_dim=32,
                                dropout=0.0)
CFG = Dims(hidden=64, cond_dim=32, n_blocks=2, n_encoder_blocks=2, n_decoder_blocks=1)


def counted(fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def test_fused_cpu_sdpa_is_invisible_to_the_counter_but_math_is_exact():
    q, k, v = torch.randn(2, 2, 7, 16), torch.randn(2, 2, 5, 16), torch.randn(2, 2, 5, 16)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, k, v)
    assert counter.get_total_flops() == 0  # why the tests force the math backend
    assert counted(lambda: F.scaled_dot_product_attention(q, k, v)) == 4 * 2 * 7 * 5 * 32  # 4 * pairs * H


def models():
    from partgm.algorithms import get_algorithm

    out = {}
    for algo in ("mdlm", "pgm", "ar"):
        algorithm = get_algorithm(algo, vocab_size=N, bos_id=N - 1)
        out[algo] = (algorithm, algorithm.build_model(PARTITION_CFG if algo == "pgm" else DIT_CFG).eval())
    return out


MODELS = models()


def test_dit_forward_bidirectional_and_output_index():
    model = MODELS["mdlm"][1]
    x = torch.randint(0, N + 1, (B, L))
    assert counted(lambda: model(x)) == dit_forward_flops(CFG, B, L, N + 1).total
    index = torch.randint(0, L, (B, 5))
    assert counted(lambda: model(x, output_index=index)) == dit_forward_flops(CFG, B, L, N + 1, n_out=5).total


def test_dit_causal_prefill_and_cached_decode_step():
    model = MODELS["ar"][1]
    x = torch.randint(0, N, (B, L))
    positions = torch.arange(L).expand(B, L)
    caches = model.new_caches()
    last = torch.full((B, 1), 9)
    assert counted(lambda: model(x[:, :10], positions[:, :10], caches, output_index=last)) == (
        dit_forward_flops(CFG, B, 10, N, n_out=1).total
    )
    assert counted(lambda: model(x[:, 10:11], positions[:, 10:11], caches)) == (
        dit_forward_flops(CFG, B, 1, N, n_past=10).total
    )


@pytest.mark.parametrize("mode", ["learn+freqs", "learn+freqs+mean"])
@pytest.mark.parametrize("projection", ["linear", "mlp4"])
def test_partition_forward_dense_and_blocks(mode, projection):
    from partgm.models import PartitionTransformer

    cfg = PartitionConfig(**{**PARTITION_CFG.__dict__, "swap_query_mode": mode, "swap_projection": projection})
    x = torch.randint(0, N, (B, L))
    groups = torch.randint(0, 2, (B, L))
    groups[1] = 1  # one row entirely in group 1: an empty block costs nothing
    dense = PartitionTransformer(dataclasses.replace(cfg, attention_layout="dense"), N).eval()
    assert counted(lambda: dense(x, groups)) == partition_forward_flops(cfg, B, L, N, "dense").total
    blocks = PartitionTransformer(dataclasses.replace(cfg, attention_layout="blocks"), N).eval()
    n0 = (groups == 0).sum(1)
    assert counted(lambda: blocks(x, groups)) == partition_forward_flops(cfg, B, L, N, "blocks", n0).total


@pytest.mark.parametrize("clean_width, query_width, padded", [(7, 5, False), (12, 3, True), (1, 31, False)])
def test_partition_forward_packed(clean_width, query_width, padded):
    model = MODELS["pgm"][1]
    tokens = torch.randint(0, N, (B, clean_width))
    positions = torch.randperm(L)[: clean_width].expand(B, clean_width)
    queries = torch.randint(0, L, (B, query_width))
    valid = (torch.arange(clean_width) < torch.tensor([clean_width, 1, 2])[:, None]) if padded else None
    assert counted(lambda: model.forward_packed(tokens, positions, queries, valid)) == (
        partition_packed_flops(CFG, B, clean_width, query_width, N).total
    )


@pytest.mark.parametrize("length, steps", [(32, 8), (32, 5), (32, 31), (32, 100), (7, 3)])
def test_uniform_plan_widths_match_decode_plan(length, steps):
    fixed = make_prompt(B, length, 0).fixed
    widths = uniform_plan_widths(length, steps)
    assert widths == plan_widths(DecodePlan.uniform(fixed, steps, torch.Generator().manual_seed(0)))
    sizes = [w for _, w in widths]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == length - 1 and len(widths) == min(steps, length - 1)


def run_generation(algo, sampler, steps, seed=0) -> int:
    algorithm, model = MODELS[algo]
    generator = torch.Generator().manual_seed(seed)
    return counted(lambda: sample(algorithm, model, B, L, steps, sampler, generator=generator))


def sampling_flops(algo: str, sampler: str, *shape, plan=None):
    """``Sampler.flops`` of the sampler ``sampler`` of algorithm ``algo`` for (dims, B, L, steps, N)."""
    return get_sampler(ALGORITHMS.get(algo), sampler).flops(Workload(*shape), plan)


@pytest.mark.parametrize("algo, sampler", [
    ("pgm", "uniform"), ("pgm", "binomial"), ("pgm", "naive"), ("mdlm", "ancestral"), ("mdlm", "fast-ancestral"),
    ("ar", "ancestral"),
])
def test_whole_generation_matches_counter(algo, sampler):
    """The realised plan is redrawn from the same seed (the samplers draw it first), so counts are exact."""
    steps = 8
    fixed = make_prompt(B, L, N - 1).fixed
    plan = None
    if sampler in ("binomial", "ancestral", "fast-ancestral") and algo != "ar":
        plan = plan_widths(DecodePlan.binomial(fixed, steps, LogLinearSchedule(), torch.Generator().manual_seed(0)))
    cost = sampling_flops(algo, sampler, CFG, B, L, steps, N, plan=plan)
    assert run_generation(algo, sampler, steps) == cost.flops.total
    if (algo, sampler) == ("mdlm", "ancestral"):
        assert cost.softmax_elements == cost.forward_passes * B * L * N
        assert cost.forward_passes <= steps + 1
    if algo == "ar":
        assert cost.forward_passes == L - 1


def test_expected_binomial_plan_against_realised_plans():
    steps, n_draws = 8, 200
    fixed = make_prompt(B, L, 0).fixed
    gen = torch.Generator().manual_seed(1)
    passes = widths = 0.0
    for _ in range(n_draws):
        plan = plan_widths(DecodePlan.binomial(fixed, steps, LogLinearSchedule(), gen))
        passes += len(plan) / n_draws
        widths += sum(w for _, w in plan) / n_draws
    e = expected_binomial_plan(B, L, steps)
    assert e["passes"] <= steps + 1
    assert e["passes"] == pytest.approx(passes, rel=0.03)
    assert e["sum_width"] == pytest.approx(widths, rel=0.03)
    fast = sampling_flops("mdlm", "fast-ancestral", CFG, B, L, steps, N)
    ref = sampling_flops("mdlm", "ancestral", CFG, B, L, steps, N)
    assert fast.forward_passes == ref.forward_passes == e["passes"]
    assert fast.flops.total < ref.flops.total and fast.flops.linear == ref.flops.linear


def test_paper_scale_sanity():
    """PGM 6/6 d1024 vs MDLM-small, L 1024, 128 steps: PGM's encoder reads about half the tokens on
    average, so its per-token network cost is well below MDLM's (the paper's ~5x speed-up)."""

    pgm = Dims.of(PartitionConfig(**{k: v for k, v in PRESETS.get("pgm-6-6-d1024").items() if k != "n_blocks"}))
    mdlm = Dims.of(DiTConfig(**PRESETS.get("mdlm-small")))
    p = sampling_flops("pgm", "uniform", pgm, 32, 1024, 128, 50257)
    m = sampling_flops("mdlm", "ancestral", mdlm, 32, 1024, 128, 50257)
    assert p.forward_passes == 128 and 100 < m.forward_passes <= 129
    assert 2 < m.flops.total / p.flops.total < 10
    assert get_sampler(ALGORITHMS.get("pgm"), "halton").flops(Workload(pgm, 1, 16, 4, 10)) is None  # no count
