"""Objectives: PGM, complementary MDLM and the validation estimators against hand computations on toy
cases; and tiny PGM / MDLM models that learn a simple synthetic distribution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from partgm.algorithms import Batch, get_algorithm
from partgm.models import randomize_
from partgm.resolve import resolve_config
from partgm.schedules import antithetic_times

VOCAB, EPS = 5, 1e-3  # EPS: the log-linear schedule's, alpha_t = 1 - (1 - EPS) t


def tiny(algo: str, vocab: int = VOCAB, randomize: bool = True, seed: int = 0):
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny"])
    algorithm = get_algorithm(algo, vocab_size=vocab, bos_id=vocab - 1)
    torch.manual_seed(seed)
    model = algorithm.build_model(cfg.model)
    return algorithm, randomize_(model, std=0.1, seed=seed) if randomize else model


def weight(t: torch.Tensor) -> torch.Tensor:
    """w(t) = -alpha_t' / (1 - alpha_t) of the log-linear schedule, written out (= 1 / t)."""
    return (1 - EPS) / (1 - (1 - (1 - EPS) * t))


def complement_weight(t: torch.Tensor) -> torch.Tensor:
    """-alpha_t' / alpha_t of the log-linear schedule (group 0 is masked at rate alpha_t), t kept <= 1 - 1e-3."""
    return (1 - EPS) / (1 - (1 - EPS) * t.clamp(max=1 - 1e-3))


def nll_by_hand(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits)[x] in float64: logits [B, L, V], x [B, L] -> [B, L]."""
    logits = logits.double()
    log_probs = logits - logits.exp().sum(dim=-1, keepdim=True).log()
    return -log_probs.gather(-1, x[..., None])[..., 0]


X = torch.tensor([[4, 0, 3, 1], [4, 2, 2, 0]])
T = torch.tensor([0.3, 1.0])  # t = 1: the complement's weight uses t = 1 - 1e-3
# The objectives compute w(t) in float32 as -alpha' / (1 - alpha): at t = 1e-3 that difference keeps ~4
# significant digits, so float64 hand computations agree to ~1e-4 relative.
RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pgm_training_loss_by_hand() -> None:
    algorithm, model = tiny("pgm")
    groups = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 0]])
    algorithm.draw_groups = lambda x, t, generator: groups
    with torch.no_grad():
        nll = nll_by_hand(model(X, groups), X)
        loss = algorithm.training_loss(model, Batch(X), T)
    w = torch.where(
        groups.bool(), weight(T.double())[:, None], complement_weight(T.double())[:, None]
    )
    expected = (w * nll).sum() / X.numel() / 2
    assert torch.isclose(loss.double(), expected, rtol=RTOL)


class MaskedInputView(nn.Module):
    """Reads MDLM inputs z (mask id N where masked) and returns the PGM network's logits with masked =
    group 1, plus a mask column (SUBS sets it to -inf). PGM's logits at group-1 positions never read
    group-1 tokens, so the fill value of masked positions does not matter."""

    def __init__(self, pgm_model: nn.Module, mask_id: int):
        super().__init__()
        self.pgm_model, self.mask_id = pgm_model, mask_id

    def forward(self, z: torch.Tensor, output_index=None, labels=None) -> torch.Tensor:
        masked = z == self.mask_id
        logits = self.pgm_model(z.masked_fill(masked, 0), masked.long())
        return torch.cat([logits, torch.zeros_like(logits[..., :1])], dim=-1)


def test_pgm_validation_is_mdlm_nelbo() -> None:
    pgm, model = tiny("pgm")
    mdlm = get_algorithm("mdlm", vocab_size=VOCAB, bos_id=VOCAB - 1)
    masked = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    uniforms = (~masked).float() * 0.9995  # masked where uniforms < 1 - alpha_t (0.2997 and 0.999)
    with torch.no_grad():
        pgm_sums, pgm_count = pgm.validation_terms(model, Batch(X), T, uniforms)
        pgm_sum = pgm_sums.sum()
        mdlm_sum = mdlm.masked_nelbo_terms(MaskedInputView(model, mdlm.mask_id), Batch(X), masked, T).double().sum()
        by_hand = (weight(T.double())[:, None] * nll_by_hand(model(X, masked.long()), X) * masked).sum()
    assert pgm_count == X.shape[1]
    assert torch.isclose(pgm_sum, mdlm_sum, rtol=1e-6)
    assert torch.isclose(pgm_sum, by_hand, rtol=RTOL)


def test_complementary_mdlm_loss_by_hand() -> None:
    algorithm, model = tiny("mdlm-complement")
    masked = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 1]], dtype=torch.bool)
    algorithm.draw_mask = lambda x, t, generator: masked
    mask_id = algorithm.mask_id
    with torch.no_grad():
        loss = algorithm.training_loss(model, Batch(X), T)
        # SUBS: the mask logit is -inf, i.e. the softmax runs over the N real ids only.
        nll_masked = nll_by_hand(model(torch.where(masked, mask_id, X))[..., :mask_id], X)
        nll_complement = nll_by_hand(model(torch.where(masked, X, mask_id))[..., :mask_id], X)
    terms = torch.where(
        masked,
        weight(T.double())[:, None] * nll_masked,
        complement_weight(T.double())[:, None] * nll_complement,
    )
    assert torch.isclose(loss.double(), terms.sum() / X.numel() / 2, rtol=RTOL)


def repeated_token_batch(batch: int, length: int, vocab: int, generator: torch.Generator) -> torch.Tensor:
    """BOS (id vocab - 1), then one random id repeated: [batch, length]."""
    token = torch.randint(0, vocab - 1, (batch, 1), generator=generator)
    x = token.expand(batch, length).clone()
    x[:, 0] = vocab - 1
    return x


@pytest.mark.parametrize("algo", ["pgm", "mdlm"])
def test_tiny_model_learns_repeated_tokens(algo: str) -> None:
    torch.manual_seed(0)
    vocab, length, batch = 8, 16, 32
    algorithm, model = tiny(algo, vocab=vocab, randomize=False)
    g = torch.Generator().manual_seed(0)
    x_eval = repeated_token_batch(64, length, vocab, g)
    t_eval = antithetic_times(64, g)

    def eval_loss() -> float:
        with torch.no_grad():
            return algorithm.training_loss(model, Batch(x_eval), t_eval, torch.Generator().manual_seed(1)).item()

    start = eval_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        x = repeated_token_batch(batch, length, vocab, g)
        loss = algorithm.training_loss(model, Batch(x), antithetic_times(batch, g), g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = eval_loss()
    print(f"{algo}: eval loss {start:.3f} -> {end:.3f}")
    assert end < 0.5 * start
