"""Distillation divergences against closed forms on hand-made 3-way distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from partgm.distill import DIVERGENCES, distill_loss
from partgm.errors import PartgmError

P = [0.5, 0.3, 0.2]  # the student
Q = [0.25, 0.25, 0.5]  # the teacher
KINDS = list(DIVERGENCES)


def logp(*rows: list[float]) -> torch.Tensor:
    """[1, K, V] float64 log-probs of the given rows (log 0 = -inf)."""
    with np.errstate(divide="ignore"):
        return torch.tensor(np.log(np.array(rows, dtype=np.float64)))[None]


def closed_forms(p: list[float], q: list[float]) -> dict[str, float]:
    p, q = np.array(p), np.array(q)
    return {
        "reverse-kl": float(np.sum(p * np.log(p / q))),
        "forward-kl": float(np.sum(q * np.log(q / p))),
        "mse": float(np.mean((np.log(p) - np.log(q)) ** 2)),
        "tv": float(0.5 * np.sum(np.abs(p - q))),
        "l1-logprob": float(np.sum(np.abs(np.log(p) - np.log(q)))),
    }


def test_registry_and_unknown_name():
    assert set(KINDS) == {"reverse-kl", "forward-kl", "mse", "tv", "l1-logprob"}
    with pytest.raises(PartgmError, match="reverse-kl.*forward-kl.*mse.*tv.*l1-logprob"):
        distill_loss(logp(P), logp(Q), "tvd")


@pytest.mark.parametrize("kind", KINDS)
def test_closed_forms(kind):
    # Written out by hand for the reverse KL: 0.5 ln 2 + 0.3 ln 1.2 + 0.2 ln 0.4.
    assert closed_forms(P, Q)["reverse-kl"] == pytest.approx(
        0.5 * math.log(2) + 0.3 * math.log(1.2) + 0.2 * math.log(0.4)
    )
    assert closed_forms(P, Q)["tv"] == pytest.approx(0.3)
    value = distill_loss(logp(P, Q), logp(Q, P), kind)  # [1, 2]: both orders
    assert value.shape == (1, 2)
    assert value[0, 0].item() == pytest.approx(closed_forms(P, Q)[kind], rel=1e-12)
    assert value[0, 1].item() == pytest.approx(closed_forms(Q, P)[kind], rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_when_equal_and_non_negative(kind):
    assert distill_loss(logp(P, Q), logp(P, Q), kind).abs().max().item() == 0.0
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4, 6, 7, generator=generator).log_softmax(-1)
    b = torch.randn(4, 6, 7, generator=generator).log_softmax(-1)
    value = distill_loss(a, b, kind)
    assert value.shape == (4, 6) and value.dtype == torch.float32
    assert (value >= 0).all()


def test_float32_by_default_and_never_downcast():
    a, b = logp(P).to(torch.bfloat16), logp(Q).to(torch.bfloat16)
    assert distill_loss(a, b).dtype == torch.float32
    assert distill_loss(logp(P), logp(Q)).dtype == torch.float64
    assert distill_loss(a, b, dtype=torch.float64).dtype == torch.float64


def test_ruled_out_ids():
    """An id ruled out by both (-inf) is a 0 term; by the KL's first argument only, still 0."""
    p, q = [0.5, 0.5, 0.0], [0.25, 0.75, 0.0]
    values = {kind: distill_loss(logp(p), logp(q), kind).item() for kind in KINDS}
    assert values["reverse-kl"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-12)
    assert values["forward-kl"] == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-12)
    assert values["mse"] == pytest.approx((math.log(2) ** 2 + math.log(2 / 3) ** 2) / 3, rel=1e-12)
    assert values["tv"] == pytest.approx(0.25, rel=1e-12)
    assert values["l1-logprob"] == pytest.approx(math.log(2) + math.log(1.5), rel=1e-12)
    # The student rules out an id the teacher does not: reverse KL finite, forward KL infinite.
    r = [0.5, 0.5, 0.0]
    s = [0.25, 0.25, 0.5]
    assert distill_loss(logp(r), logp(s), "reverse-kl").item() == pytest.approx(math.log(2), rel=1e-12)
    assert distill_loss(logp(r), logp(s), "forward-kl").item() == math.inf


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_finite_with_ruled_out_ids(kind):
    generator = torch.Generator().manual_seed(1)
    ruled_out = torch.zeros(3, 5, 6, dtype=torch.bool)
    ruled_out[..., -1] = True  # e.g. the SUBS mask id
    ruled_out[0, 0, 2] = True
    logits = torch.randn(3, 5, 6, generator=generator).masked_fill(ruled_out, float("-inf")).requires_grad_()
    teacher = torch.randn(3, 5, 6, generator=generator).masked_fill(ruled_out, float("-inf")).log_softmax(-1)
    value = distill_loss(logits.log_softmax(-1), teacher, kind)
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
