"""SDTT teacher targets (hand-computed steps, random-draw replay, unmask statistics) and DistillRounds."""

from __future__ import annotations

import pytest
import torch

from partgm.distill import DistillRounds, teacher_targets, unmask_probability
from partgm.errors import PartgmError
from partgm.samplers.common import sample_categorical
from partgm.schedules import LogLinearSchedule, NoiseSchedule

V = 4
MASK = V  # the masked positions of z hold this id (any value works: the teacher passes it through)


class FlatThenLinear(NoiseSchedule):
    """alpha_t = 0 for t >= 0.5 (a step inside never unmasks), 1 - 2t below (a step to 0 unmasks all)."""

    def alpha(self, t):
        return torch.where(t >= 0.5, torch.zeros_like(t), 1.0 - 2.0 * t)

    def alpha_prime(self, t):
        return torch.where(t >= 0.5, torch.zeros_like(t), torch.full_like(t, -2.0))


def fake_logp(call: int, tokens: torch.Tensor, clean: torch.Tensor, vocab: int = V) -> torch.Tensor:
    """Fixed log-probs [B, L, V], different for each call, position, number of clean tokens and the
    clean tokens' values."""
    batch, length = clean.shape
    n_clean = clean.sum(1).double()[:, None, None]
    token_sum = torch.where(clean, tokens, 0).sum(1).double()[:, None, None]
    position = torch.arange(length, dtype=torch.float64)[None, :, None]
    v = torch.arange(vocab, dtype=torch.float64)[None, None, :]
    logits = (
        0.7 * call * v + 0.3 * torch.cos(position * (v + 1)) + 0.2 * n_clean * (v == 1) + 0.05 * token_sum * v
    )
    return logits.expand(batch, length, vocab).log_softmax(-1).float()


class FakeDenoiser:
    def __init__(self, vocab: int = V):
        self.vocab = vocab
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, tokens, clean):
        self.inputs.append((tokens.clone(), clean.clone()))
        return fake_logp(len(self.inputs), tokens, clean, self.vocab)


def example():
    """Two rows of 5 tokens with some clean positions (values 0..3) and masked ones (MASK)."""
    masked = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 1, 0]], dtype=torch.bool)
    x = torch.tensor([[2, 0, 1, 3, 2], [1, 3, 0, 2, 1]])
    return torch.where(masked, MASK, x), masked


def test_two_steps_by_hand():
    """Row 0: t = 0.1, dt = 0.2 -> step 1 ends at s = 0: every masked position is unmasked at step 1 and
    takes the 1st call's distribution. Row 1: t = 0.9 -> alpha = 0 over both steps: nothing is
    unmasked, every masked position takes the 2nd (last) call's distribution."""
    z, masked = example()
    denoise = FakeDenoiser()
    generator = torch.Generator().manual_seed(0)
    logp, target_mask = teacher_targets(
        denoise, z, masked, torch.tensor([0.1, 0.9]), 0.2, 2, FlatThenLinear(), generator
    )
    assert torch.equal(target_mask, masked)
    assert len(denoise.inputs) == 2
    # Call 1 sees z as given.
    assert torch.equal(denoise.inputs[0][0], z) and torch.equal(denoise.inputs[0][1], ~masked)
    # Call 2: row 0 fully clean, with tokens in 0..V-1 at the former masks; row 1 unchanged.
    tokens2, clean2 = denoise.inputs[1]
    assert clean2[0].all() and torch.equal(clean2[1], ~masked[1])
    assert torch.equal(tokens2[0][~masked[0]], z[0][~masked[0]]) and (tokens2[0] < V).all()
    assert torch.equal(tokens2[1], z[1])
    first = fake_logp(1, z, ~masked)
    second = fake_logp(2, tokens2, clean2)
    assert not torch.allclose(first, second)
    assert torch.equal(logp[0][masked[0]], first[0][masked[0]])
    assert torch.equal(logp[1][masked[1]], second[1][masked[1]])


def test_sampled_tokens_follow_the_teacher():
    """With a one-hot teacher the token written at an unmasked position is known: id (position + 1) % V."""
    z, masked = example()
    calls = []

    def one_hot(tokens, clean):
        calls.append((tokens.clone(), clean.clone()))
        ids = (torch.arange(tokens.shape[1]) + 1) % V
        return torch.full((*tokens.shape, V), float("-inf")).scatter(2, ids.expand_as(tokens)[..., None], 0.0)

    teacher_targets(one_hot, z, masked, 0.1, 0.2, 2, FlatThenLinear(), torch.Generator().manual_seed(1))
    expected = torch.where(masked, (torch.arange(5) + 1) % V, z)
    assert torch.equal(calls[1][0], expected) and calls[1][1].all()


def test_never_unmasked_take_the_last_step():
    """alpha = 0 over three steps: all targets are the 3rd call's distribution, on an unchanged z."""
    z, masked = example()
    denoise = FakeDenoiser()
    logp, _ = teacher_targets(
        denoise, z, masked, 0.95, 0.1, 3, FlatThenLinear(), torch.Generator().manual_seed(0)
    )
    assert len(denoise.inputs) == 3
    assert all(torch.equal(tokens, z) for tokens, _ in denoise.inputs)
    assert torch.equal(logp[masked], fake_logp(3, z, ~masked)[masked])


def test_one_step_is_one_deterministic_forward():
    z, masked = example()
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    logp, _ = teacher_targets(FakeDenoiser(), z, masked, 0.5, 0.1, 1, LogLinearSchedule(), generator)
    assert torch.equal(generator.get_state(), state)
    assert torch.equal(logp, fake_logp(1, z, ~masked))


def unmask_by_hand(t: float, s: float, eps: float) -> float:
    """(alpha_s - alpha_t) / (1 - alpha_t) of the log-linear schedule, times clamped at 0; 1 at t = 0."""
    alpha_t, alpha_s = 1.0 - (1.0 - eps) * max(t, 0.0), 1.0 - (1.0 - eps) * max(s, 0.0)
    return 1.0 if alpha_t == 1.0 else (alpha_s - alpha_t) / (1.0 - alpha_t)


def test_replay_of_the_random_draws():
    """Three log-linear steps, per-row times: replaying the documented draws (uniforms [B, L] float64, then
    the exponential race over the rows unmasked now, at each step but the last) gives the same targets."""
    eps = 1e-3
    generator = torch.Generator().manual_seed(7)
    batch, length, vocab = 6, 7, 5
    masked = torch.rand(batch, length, generator=generator) < 0.7
    z = torch.where(masked, vocab, torch.randint(0, vocab, (batch, length), generator=generator))
    t = torch.tensor([0.9, 0.5, 0.3, 0.15, 0.05, 0.7])
    dt = 0.1
    state = generator.get_state()
    logp, _ = teacher_targets(FakeDenoiser(vocab), z, masked, t, dt, 3, LogLinearSchedule(eps), generator)

    replay = torch.Generator()
    replay.set_state(state)
    tokens, still = z.clone(), masked.clone()
    expected = torch.full((batch, length, vocab), float("nan"))
    unmasked_before_last = 0
    for j in range(3):
        lp = fake_logp(j + 1, tokens, ~still, vocab)
        if j == 2:
            expected[still] = lp[still]
            break
        p = torch.tensor([unmask_by_hand(ti - j * dt, ti - (j + 1) * dt, eps) for ti in t.double().tolist()])
        u = torch.rand(batch, length, generator=replay, dtype=torch.float64)
        now = still & (u < p[:, None])
        expected[now] = lp[now]
        tokens[now] = sample_categorical(lp[now].double().exp(), replay)
        still &= ~now
        unmasked_before_last += int(now.sum())
    assert unmasked_before_last > 0 and int(still.sum()) > 0  # both kinds of targets are exercised
    assert torch.equal(logp[masked], expected[masked])


def test_unmask_fraction_matches_the_schedule():
    """Rows at t = 0.5 and t = 0.2, dt = 0.1: the fraction of masked positions whose target is the 1st
    call's is (alpha_s - alpha_t) / (1 - alpha_t) = 0.2 and 0.5 under the log-linear schedule."""
    batch, length = 4000, 8
    generator = torch.Generator().manual_seed(11)
    masked = torch.rand(batch, length, generator=generator) < 0.5
    z = torch.where(masked, 3, 0)
    t = torch.tensor([0.5, 0.2]).repeat_interleave(batch // 2)
    calls = []

    def by_call(tokens, clean):
        calls.append(None)
        return torch.tensor([float(len(calls)), 0.0, 0.0]).log_softmax(-1).expand(*tokens.shape, 3)

    schedule = LogLinearSchedule()
    logp, _ = teacher_targets(by_call, z, masked, t, 0.1, 2, schedule, generator)
    first = logp[..., 0] == torch.tensor([1.0, 0.0, 0.0]).log_softmax(-1)[0]
    expected = unmask_probability(schedule, torch.tensor([0.5, 0.2]), torch.tensor([0.4, 0.1]))
    assert expected.tolist() == pytest.approx([0.2, 0.5])
    for half, p in zip((slice(0, batch // 2), slice(batch // 2, None)), expected.tolist()):
        n = int(masked[half].sum())
        fraction = int((first[half] & masked[half]).sum()) / n
        assert abs(fraction - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_bad_arguments():
    z, masked = example()
    with pytest.raises(PartgmError, match="at least one step"):
        teacher_targets(FakeDenoiser(), z, masked, 0.5, 0.1, 0, LogLinearSchedule())
    with pytest.raises(PartgmError, match="positive"):
        teacher_targets(FakeDenoiser(), z, masked, 0.5, 0.0, 2, LogLinearSchedule())
    with pytest.raises(PartgmError, match="shape"):
        teacher_targets(FakeDenoiser(), z, masked, torch.ones(3), 0.1, 2, LogLinearSchedule())
    with pytest.raises(PartgmError, match="bool"):
        teacher_targets(FakeDenoiser(), z, masked.long(), 0.5, 0.1, 2, LogLinearSchedule())


def test_rounds_double_dt_at_each_boundary():
    rounds = DistillRounds(steps_per_round=3)
    assert rounds.dt == 1 / 1024 and rounds.round == 0
    ended = [rounds.advance(step) for step in range(1, 10)]
    assert ended == [False, False, True, False, False, True, False, False, True]
    assert rounds.round == 3 and rounds.dt == 8 / 1024 and rounds.effective_steps == 128
    assert rounds.advance(9) is False  # a repeated step is not a new boundary
    assert rounds.advance(15) is True and rounds.round == 5  # jumped over one boundary: one True


def test_rounds_start_step_and_finish():
    rounds = DistillRounds(initial_dt=0.01, steps_per_round=10, num_rounds=2, start_step=100)
    assert not rounds.advance(105) and not rounds.finished
    assert rounds.advance(110) and rounds.dt == 0.02 and not rounds.finished
    assert rounds.advance(120) and rounds.finished
    assert DistillRounds(growth=3, round=2).dt == 9 / 1024
    with pytest.raises(PartgmError):
        DistillRounds(steps_per_round=0)
    with pytest.raises(PartgmError):
        DistillRounds(growth=1)
    with pytest.raises(PartgmError):
        DistillRounds(initial_dt=0.0)


@pytest.mark.parametrize("stop", [4, 6])  # mid-round and exactly at a boundary
def test_rounds_resume_exactly(stop):
    steps = range(1, 13)
    reference = DistillRounds(steps_per_round=3, num_rounds=4)
    full = [(reference.advance(s), reference.dt) for s in steps]
    first = DistillRounds(steps_per_round=3, num_rounds=4)
    out = [(first.advance(s), first.dt) for s in steps if s <= stop]
    state = first.state_dict()
    resumed = DistillRounds()
    resumed.load_state_dict(state)
    assert resumed == first
    out += [(resumed.advance(s), resumed.dt) for s in steps if s > stop]
    assert out == full and resumed.finished
    with pytest.raises(PartgmError, match="unknown"):
        resumed.load_state_dict({"dt": 0.5})
