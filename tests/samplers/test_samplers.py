"""Samplers: every position decoded exactly once, prompts kept, forward-pass counts, determinism, nucleus,
the efficient PGM sampler against the naive one and the exact distribution, AR KV-cached decoding, errors.

Tiny models with every parameter randomised, so outputs depend on inputs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from helpers import sample
from scipy import stats
from torch import nn

from partgm.algorithms import ALGORITHMS, Batch, get_algorithm
from partgm.errors import PartgmError
from partgm.models import randomize_
from partgm.resolve import resolve_config
from partgm.samplers import Prompt, make_prompt, sampler_names
from partgm.samplers.common import DecodePlan, sample_tokens, token_probs
from partgm.schedules import NoiseSchedule, antithetic_times, get_schedule

VOCAB, LENGTH = 11, 16
BOS = VOCAB - 1
PREFIX, INFILL = [1, 2], {9: 4, 13: 0}  # fixed: 0 (BOS), 1, 2, 9, 13


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(algo: str, vocab: int = VOCAB, seed: int = 0):
    """(algorithm, randomised cpu-tiny model in eval mode)."""
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny"])
    algorithm = get_algorithm(algo, vocab_size=vocab, bos_id=vocab - 1, length=LENGTH)  # MaskGIT: positions
    return algorithm, randomize_(algorithm.build_model(cfg.model), std=0.1, seed=seed).eval()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def record_calls(model: nn.Module, method: str) -> list[tuple]:
    """Wrap ``model.<method>`` so that a copy of each call's positional arguments is appended to the list."""
    calls: list[tuple] = []
    inner: Callable = getattr(model, method)

    def wrapper(*args, **kwargs):
        calls.append(tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        return inner(*args, **kwargs)

    setattr(model, method, wrapper)
    return calls


def ragged_fixed(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """[B, L] bool: BOS plus a different random number of fixed positions per row."""
    fixed = torch.rand(batch, length, generator=generator) < torch.linspace(0.0, 0.6, batch)[:, None]
    fixed[:, 0] = True
    return fixed


def noisy_copies(n: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 4]: BOS, then three tokens that each copy a shared random id w.p. 1/2, else are uniform."""
    shared = torch.randint(0, vocab, (n, 1), generator=generator)
    uniform = torch.randint(0, vocab, (n, 3), generator=generator)
    x = torch.where(torch.rand(n, 3, generator=generator) < 0.5, shared, uniform)
    return torch.cat([torch.full((n, 1), vocab - 1), x], dim=1)


def briefly_trained(algo: str, vocab: int = 4) -> tuple:
    """(algorithm, tiny model trained 100 steps on ``noisy_copies``): random weights give nearly
    independent conditionals; these depend strongly on the clean tokens while every outcome keeps mass."""
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny"])
    algorithm = get_algorithm(algo, vocab_size=vocab, bos_id=vocab - 1)
    torch.manual_seed(0)
    model = algorithm.build_model(cfg.model)
    g = seeded(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        loss = algorithm.training_loss(model, Batch(noisy_copies(64, vocab, g)), antithetic_times(64, g), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return algorithm, model.eval()


@pytest.fixture(scope="module")
def trained_pgm() -> tuple:
    return briefly_trained("pgm")


@pytest.fixture(scope="module")
def trained_mdlm() -> tuple:
    return briefly_trained("mdlm")


# ----- which positions each step decodes ------------------------------------------------------------------


class HalfwaySchedule(NoiseSchedule):
    """alpha_t = (1 - t) / 2: half the tokens are still masked at the end of the grid, for the final step."""

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - t) / 2


@pytest.mark.parametrize(
    "kind, steps, schedule",
    [("uniform", s, None) for s in (1, 3, 5, 16, 40)]
    + [("binomial", s, get_schedule("loglinear")) for s in (1, 7, 64)]
    + [("binomial", 3, HalfwaySchedule())],
)
def test_plan_decodes_each_free_position_once(kind: str, steps: int, schedule: NoiseSchedule | None) -> None:
    g = seeded(0)
    fixed = ragged_fixed(6, LENGTH, g)
    n_free = (~fixed).sum(dim=1)
    if kind == "uniform":
        plan = DecodePlan.uniform(fixed, steps, g)
        assert len(plan) == min(steps, int(n_free.max()))
    else:
        plan = DecodePlan.binomial(fixed, steps, schedule, g)
        assert len(plan) <= steps + 1
    decoded = torch.zeros(fixed.shape, dtype=torch.long)
    for step in plan:
        clean = torch.zeros_like(fixed)
        clean.scatter_(
            1, plan.order[:, : step.clean_width], step.clean_valid if step.clean_valid is not None else True
        )
        assert torch.equal(clean, fixed | (decoded > 0))  # the clean set: fixed + everything decoded so far
        decoded.scatter_add_(1, step.query_positions, step.query_valid.long())
    assert torch.equal(decoded, (~fixed).long())


# ----- PGM ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler, steps", [("uniform", s) for s in (1, 4, 5, 11, 40)] + [("binomial", s) for s in (3, 50)]
)
def test_pgm_decodes_each_position_once_and_keeps_the_prompt(sampler: str, steps: int) -> None:
    algorithm, model = tiny("pgm")
    calls = record_calls(model, "forward_packed")
    prompt = make_prompt(3, LENGTH, BOS, PREFIX, INFILL)
    out = sample(algorithm, model, 3, LENGTH, steps, sampler, generator=seeded(0), prompt=prompt)
    n_free = LENGTH - 5
    if sampler == "uniform":
        assert len(calls) == min(steps, n_free)
    else:
        assert len(calls) <= steps + 1
    decodes = torch.zeros(3, LENGTH, dtype=torch.long)
    for clean_tokens, clean_positions, query_positions, clean_valid in calls:
        valid = torch.ones_like(clean_positions, dtype=torch.bool) if clean_valid is None else clean_valid
        clean = torch.zeros(3, LENGTH, dtype=torch.bool).scatter_(1, clean_positions, valid)
        assert torch.equal(clean, prompt.fixed | (decodes > 0))
        # clean tokens are read as finally output: a decoded token never changes
        assert torch.equal(clean_tokens[valid], out.gather(1, clean_positions)[valid])
        decodes.scatter_add_(
            1, query_positions, (query_positions != 0).long()
        )  # padded query slots hold position 0
    assert torch.equal(decodes, (~prompt.fixed).long())
    assert torch.equal(out[prompt.fixed], prompt.tokens[prompt.fixed])


@pytest.mark.parametrize("steps", [1, 3, 4, 15])
def test_pgm_uniform_equals_naive_for_the_same_seed(steps: int, trained_pgm: tuple) -> None:
    """Ragged prompts; the model's outputs depend strongly on the clean tokens (see ``briefly_trained``)."""
    algorithm, model = trained_pgm
    g = seeded(1)
    prompt = Prompt(
        torch.randint(0, algorithm.vocab_size, (4, LENGTH), generator=g), ragged_fixed(4, LENGTH, g)
    )
    fast = sample(algorithm, model, 4, LENGTH, steps, "uniform", generator=seeded(2), prompt=prompt)
    naive = sample(algorithm, model, 4, LENGTH, steps, "naive", generator=seeded(2), prompt=prompt)
    assert torch.equal(fast, naive)


def test_pgm_greedy_with_a_tiny_nucleus() -> None:
    """One step decodes every free position from the prompt alone: a tiny nucleus gives its argmax."""
    algorithm, model = tiny("pgm")
    prompt = make_prompt(2, LENGTH, BOS, PREFIX, INFILL)
    out = sample(algorithm, model, 2, LENGTH, 1, nucleus=1e-9, generator=seeded(3), prompt=prompt)
    clean = prompt.fixed[0].nonzero()[:, 0].expand(2, -1)
    free = (~prompt.fixed[0]).nonzero()[:, 0].expand(2, -1)
    with torch.no_grad():
        greedy = model.forward_packed(prompt.tokens.gather(1, clean), clean, free).argmax(dim=-1)
    assert torch.equal(out.gather(1, free), greedy)


def exact_pgm_two_step_distribution(model: nn.Module, vocab: int) -> torch.Tensor:
    """The law of the uniform sampler with 2 steps on [BOS, x1, x2, x3], from the training path alone.

    Step 1 decodes one position a (uniformly random) given BOS; step 2 the other two, independently given
    BOS and x_a. Returns P [V, V, V] (float64) over (x1, x2, x3)."""
    bos = vocab - 1

    def probs(x: list[int], clean: set[int]) -> torch.Tensor:  # [4, V]
        groups = torch.tensor([[0 if i in clean else 1 for i in range(4)]])
        with torch.no_grad():
            return token_probs(model(torch.tensor([x]), groups))[0]

    first = probs([bos, 0, 0, 0], {0})
    second = {
        (a, v): probs([bos] + [v if i == a else 0 for i in (1, 2, 3)], {0, a})
        for a in (1, 2, 3)
        for v in range(vocab)
    }
    exact = torch.zeros(vocab, vocab, vocab, dtype=torch.float64)
    for x in itertools.product(range(vocab), repeat=3):
        seq = (bos, *x)
        for a in (1, 2, 3):
            p = first[a, seq[a]]
            for j in {1, 2, 3} - {a}:
                p = p * second[a, seq[a]][j, seq[j]]
            exact[x] += p / 3
    return exact


def histogram(samples: torch.Tensor, vocab: int) -> torch.Tensor:
    """[n, 4] sequences -> counts [V ** 3] of (x1, x2, x3)."""
    codes = (samples[:, 1:] * torch.tensor([vocab * vocab, vocab, 1])).sum(dim=1)
    return torch.bincount(codes, minlength=vocab**3).double()


def test_pgm_uniform_and_naive_samplers_match_the_exact_distribution(trained_pgm: tuple) -> None:
    """4000 samples each (different seeds), 64 outcomes: chi-square p-values > 1e-3 against the exact law
    and between the two samplers; total variation to the exact law < 0.08 (about 0.05 expected; the
    one-step sampler's law is at 0.2)."""
    algorithm, model = trained_pgm
    vocab, n = algorithm.vocab_size, 4000
    exact = exact_pgm_two_step_distribution(model, vocab).flatten()
    fast = histogram(sample(algorithm, model, n, 4, 2, "uniform", generator=seeded(5)), vocab)
    naive = histogram(sample(algorithm, model, n, 4, 2, "naive", generator=seeded(6)), vocab)
    for counts in (fast, naive):
        assert stats.chisquare(counts.numpy(), (exact * n).numpy()).pvalue > 1e-3
        assert 0.5 * (counts / n - exact).abs().sum() < 0.08
    assert stats.chi2_contingency(torch.stack([fast, naive]).numpy()).pvalue > 1e-3


# ----- MDLM -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["mdlm", "mdlm-complement"])
@pytest.mark.parametrize("sampler", ["ancestral", "fast-ancestral"])
@pytest.mark.parametrize("steps", [4, 1000])
def test_mdlm_unmasks_each_position_once_and_skips_idle_steps(algo: str, sampler: str, steps: int) -> None:
    algorithm, model = tiny(algo)
    calls = record_calls(model, "forward")
    prompt = make_prompt(2, LENGTH, BOS, PREFIX, INFILL)
    out = sample(algorithm, model, 2, LENGTH, steps, sampler, generator=seeded(0), prompt=prompt)
    inputs = [args[0] for args in calls] + [out]
    mask = algorithm.mask_id
    assert len(calls) <= steps + 1
    for before, after in itertools.pairwise(inputs):
        unmasked = before != mask
        assert torch.equal(after[unmasked], before[unmasked])  # an unmasked token never changes
        assert bool((after != before).any())  # no forward pass for a step that changes nothing
    assert torch.equal(inputs[0] != mask, prompt.fixed)
    assert bool((out != mask).all())
    assert torch.equal(out[prompt.fixed], prompt.tokens[prompt.fixed])


def test_mdlm_ancestral_and_fast_ancestral_agree_in_distribution(trained_mdlm: tuple) -> None:
    algorithm, model = trained_mdlm
    vocab, n = algorithm.vocab_size, 4000
    reference = histogram(sample(algorithm, model, n, 4, 3, "ancestral", generator=seeded(7)), vocab)
    fast = histogram(sample(algorithm, model, n, 4, 3, "fast-ancestral", generator=seeded(8)), vocab)
    assert stats.chi2_contingency(torch.stack([reference, fast]).numpy()).pvalue > 1e-3


# ----- AR -------------------------------------------------------------------------------------------------


def test_ar_prefills_then_decodes_one_token_per_forward() -> None:
    algorithm, model = tiny("ar")
    calls = record_calls(model, "forward")
    prompt = make_prompt(2, LENGTH, BOS, PREFIX)
    out = sample(algorithm, model, 2, LENGTH, 7, generator=seeded(0), prompt=prompt)
    assert [args[0].shape[1] for args in calls] == [3] + [1] * (LENGTH - 4)
    assert torch.equal(out[:, :3], prompt.tokens[:, :3])


def test_ar_greedy_equals_full_forward_argmax() -> None:
    algorithm, model = tiny("ar")
    out = sample(algorithm, model, 2, LENGTH, 1, nucleus=1e-9, generator=seeded(0))
    with torch.no_grad():
        greedy = model(out[:, :-1]).argmax(dim=-1)
    assert torch.equal(out[:, 1:], greedy)


# ----- every sampler --------------------------------------------------------------------------------------

ALL = [(algo, s) for algo in ALGORITHMS.names() for s in sampler_names(ALGORITHMS.get(algo))]


@pytest.mark.parametrize("algo, sampler", ALL)
def test_same_seed_same_samples_and_model_mode_restored(algo: str, sampler: str) -> None:
    algorithm, model = tiny(algo)
    model.train()
    draws = [sample(algorithm, model, 2, LENGTH, 6, sampler, 0.9, seeded(seed)) for seed in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    assert bool((draws[0][:, 0] == BOS).all())
    assert model.training


def test_sample_tokens() -> None:
    g = seeded(0)
    logits = torch.randn(50, 7, generator=g)
    assert torch.equal(sample_tokens(logits, 1e-9, g), logits.argmax(dim=-1))
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()
    assert torch.equal(token_probs(probs, 0.75) > 0, torch.tensor([False, True, False, True]))
    assert torch.equal(token_probs(probs, 0.85) > 0, torch.tensor([True, True, False, True]))
    counts = torch.bincount(sample_tokens(probs.expand(20000, -1), 1.0, g), minlength=4) / 20000
    assert (counts - probs.exp()).abs().max() < 0.015


# ----- errors ---------------------------------------------------------------------------------------------


def test_sampler_errors() -> None:
    algorithm, model = tiny("pgm")
    with pytest.raises(PartgmError, match="4 tokens.*length is 3"):
        make_prompt(1, 3, BOS, [1, 2, 3])
    with pytest.raises(PartgmError, match="outside"):
        make_prompt(1, LENGTH, BOS, fixed={LENGTH: 1})
    with pytest.raises(PartgmError, match="unknown sampler 'ancestral'.*uniform, binomial, naive"):
        sample(algorithm, model, 1, LENGTH, 4, "ancestral")
    with pytest.raises(PartgmError, match="outside the vocabulary"):
        sample(algorithm, model, 1, LENGTH, 4, prompt=make_prompt(1, LENGTH, BOS, [VOCAB]))
    with pytest.raises(PartgmError, match="context is 8"):
        sample(get_algorithm("pgm", VOCAB, BOS, length=8), model, 1, LENGTH, 4)
    with pytest.raises(PartgmError, match="nucleus"):
        sample(algorithm, model, 1, LENGTH, 4, nucleus=0.0)
    with pytest.raises(PartgmError, match="steps"):
        sample(algorithm, model, 1, LENGTH, 0)
    ar, ar_model = tiny("ar")
    with pytest.raises(PartgmError, match="prefix prompts only"):
        sample(ar, ar_model, 1, LENGTH, 4, prompt=make_prompt(1, LENGTH, BOS, fixed={5: 1}))
