"""Issue 11, part 1: the objectives for every schedule, the reference's network details, and the laws of
the training times, the binomial decoding plan and the float64 token draw."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from partgm.algorithms import Batch, get_algorithm
from partgm.models import randomize_
from partgm.resolve import resolve_config
from partgm.run.checkpoint import migrate_config, weight_names
from partgm.samplers.common import DecodePlan, token_probs
from partgm.schedules import MIN_TRAIN_TIME, CosineSchedule, LogLinearSchedule, antithetic_times

pytestmark = pytest.mark.usefixtures("one_thread")
TIMES = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)


def test_complement_weight_closed_forms() -> None:
    """Group 0 is masked at rate alpha_t: its weight is -alpha'/alpha (issue: cosine 0.25 / 1.57 / 9.9)."""
    eps = 1e-3
    loglinear = (1 - eps) / (1 - (1 - eps) * TIMES)
    cosine = 0.5 * math.pi * torch.tan(0.5 * math.pi * TIMES)
    assert torch.allclose(LogLinearSchedule().complement_weight(TIMES), loglinear, rtol=1e-12)
    assert torch.allclose(CosineSchedule().complement_weight(TIMES), cosine, rtol=1e-12)
    got = CosineSchedule().complement_weight(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    assert got.tolist() == pytest.approx([0.2488, 1.5708, 9.9178], abs=1e-3)


@pytest.mark.parametrize("algo", ["pgm", "mdlm-complement"])
def test_cosine_group0_weight_in_the_loss(algo: str) -> None:
    """With every token in the complementary group, the loss is the complement weight times the NLL."""
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny", "train.noise_schedule=cosine"])
    algorithm = get_algorithm(algo, vocab_size=7, bos_id=6, noise_schedule="cosine")
    model = randomize_(algorithm.build_model(cfg.model), std=0.1, seed=0).eval()
    x = torch.tensor([[6, 1, 2, 3, 4, 5]])
    t = torch.tensor([0.9])
    if algo == "pgm":
        algorithm.draw_groups = lambda x, t, generator: torch.zeros_like(x)
        nll = F.cross_entropy(model(x, torch.zeros_like(x))[0].double(), x[0], reduction="none")
    else:
        algorithm.draw_mask = lambda x, t, generator: torch.zeros_like(x, dtype=torch.bool)
        logits = model(torch.full_like(x, algorithm.mask_id))[0, :, : algorithm.mask_id]
        nll = F.cross_entropy(logits.double(), x[0], reduction="none")
    with torch.no_grad():
        loss = float(algorithm.training_loss(model, Batch(x), t))
    expected = 0.5 * math.pi * math.tan(0.45 * math.pi) * float(nll.detach().mean()) / 2
    assert loss == pytest.approx(expected, rel=1e-4)


def test_attention_dropout_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, dropout_p=0.0, **kwargs):
        seen.append(dropout_p)
        return sdpa(*args, dropout_p=dropout_p, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.tensor([[6, 1, 2, 3, 4, 5]])
    for extra, expected in (([], 0.0), (["model.attention_dropout=0.2"], 0.2)):
        for algo in ("pgm", "mdlm"):
            cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny", "model.dropout=0.1", *extra])
            model = get_algorithm(algo, vocab_size=7, bos_id=6).build_model(cfg.model).train()
            seen.clear()
            model(x, torch.tensor([[0, 1, 0, 1, 0, 1]])) if algo == "pgm" else model(x)
            assert expected in seen and (expected > 0 or set(seen) == {0.0}), (algo, extra)


def test_group_swap_query_starts_at_unit_scale() -> None:
    cfg = resolve_config(overrides=["algo=pgm", "model.hidden_size=512", "model.n_heads=8"])
    torch.manual_seed(0)
    model = get_algorithm("pgm", vocab_size=7, bos_id=6).build_model(cfg.model)
    assert float(model.group_swap.base_embedding.detach().std()) == pytest.approx(1.0, abs=0.1)


def test_mlp4_is_the_reference_silu_network_and_old_gelu_runs_keep_theirs(tmp_path) -> None:
    cfg = resolve_config(overrides=["algo=pgm", "preset=cpu-tiny", "model.swap_projection=mlp4"])
    model = get_algorithm("pgm", vocab_size=7, bos_id=6).build_model(cfg.model)
    proc = model.group_swap.query_processor
    assert sorted(proc.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    h = torch.randn(3, cfg.model.hidden_size)
    assert torch.allclose(proc(h), proc[2](F.silu(proc[0](h))))
    # A run saved with the GELU network under "mlp4" (before the rename) is read as "mlp4-gelu".
    gelu = resolve_config(overrides=["algo=pgm", "preset=cpu-tiny", "model.swap_projection=mlp4-gelu"])
    old = get_algorithm("pgm", vocab_size=7, bos_id=6).build_model(gelu.model)
    assert "group_swap.query_processor.fc.weight" in old.state_dict()
    assert migrate_config(cfg, old.state_dict()).model.swap_projection == "mlp4-gelu"
    assert migrate_config(cfg, model.state_dict()).model.swap_projection == "mlp4"
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, tmp_path / "w.safetensors")
    assert migrate_config(cfg, weight_names(tmp_path / "w.safetensors")).model.swap_projection == "mlp4-gelu"


def test_antithetic_times_share_one_offset_with_gaps_of_1_over_n() -> None:
    n = 16
    for seed in range(5):
        t = antithetic_times(n, torch.Generator().manual_seed(seed)).double()
        u = ((t - MIN_TRAIN_TIME) / (1 - MIN_TRAIN_TIME)).sort().values
        assert torch.allclose(u.diff(), torch.full((n - 1,), 1 / n, dtype=torch.float64), atol=1e-6)
        offsets = torch.frac(u * n)
        assert float(offsets.max() - offsets.min()) < 1e-5  # one shared offset u / n


def test_binomial_plan_counts_follow_the_step_by_step_law() -> None:
    """Per step, Binomial(#still masked, (alpha_s - alpha_t) / (1 - alpha_t)): mean and variance of each
    step's count match a step-by-step simulation (squaring the CDF fails this)."""
    rows, length, steps = 4000, 24, 6
    schedule = LogLinearSchedule()
    fixed = torch.zeros(rows, length, dtype=torch.bool)
    plan = DecodePlan.binomial(fixed, steps, schedule, torch.Generator().manual_seed(0))
    # Rebuild per-step counts [steps + 1, rows] (the plan drops steps where no row decodes: none here).
    counts = plan.bounds.diff(dim=0).double()
    assert counts.shape == (steps + 1, rows)
    t = torch.linspace(1.0, 1e-5, steps + 1, dtype=torch.float64)
    alpha = torch.cat([schedule.alpha(t), torch.ones(1, dtype=torch.float64)])
    g = torch.Generator().manual_seed(1)
    remaining = torch.full((rows,), float(length), dtype=torch.float64)
    simulated = []
    for k in range(steps + 1):
        p = float((alpha[k + 1] - alpha[k]) / (1 - alpha[k]))
        c = torch.binomial(remaining, torch.full_like(remaining, p), generator=g)
        simulated.append(c)
        remaining -= c
    simulated = torch.stack(simulated)
    se = ((counts.var(dim=1) + simulated.var(dim=1)) / rows).sqrt()
    assert ((counts.mean(dim=1) - simulated.mean(dim=1)).abs() < 5 * se + 1e-6).all()
    # variances: relative standard error of a sample variance ~ sqrt(2 / rows) (about 2%)
    assert torch.allclose(counts.var(dim=1), simulated.var(dim=1), rtol=0.15, atol=0.02)


def test_sampling_probabilities_are_float64() -> None:
    logits = torch.tensor([[0.0, -120.0, -800.0]])  # exp(-120) ~ 8e-53: zero in float32, not in float64
    probs = token_probs(logits)
    assert probs.dtype == torch.float64
    assert 0.0 < float(probs[0, 1]) == pytest.approx(math.exp(-120.0), rel=1e-9)
    assert token_probs(logits, nucleus=0.9).dtype == torch.float64
