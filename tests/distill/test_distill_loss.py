"""The scalar SDTT loss: the mean of the per-position divergence over the target positions."""

from __future__ import annotations

import pytest
import torch

from partgm.distill import DIVERGENCES, distill_loss, sdtt_loss
from partgm.errors import PartgmError


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 6, 5, generator=generator).requires_grad_()
    teacher = torch.randn(3, 6, 5, generator=generator).log_softmax(-1)
    mask = torch.rand(3, 6, generator=generator) < 0.5
    return student, teacher, mask


@pytest.mark.parametrize("kind", list(DIVERGENCES))
def test_equals_manual_mean(kind):
    student, teacher, mask = batch()
    logp = student.log_softmax(-1)
    loss = sdtt_loss(logp, teacher, mask, kind)
    per = distill_loss(logp, teacher, kind)
    manual = sum(per[b, l] for b in range(3) for l in range(6) if mask[b, l]) / int(mask.sum())
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)


def test_default_is_reverse_kl_and_bf16_inputs_give_fp32():
    student, teacher, mask = batch(1)
    logp = student.log_softmax(-1)
    assert sdtt_loss(logp, teacher, mask).item() == sdtt_loss(logp, teacher, mask, "reverse-kl").item()
    assert sdtt_loss(logp.bfloat16(), teacher.bfloat16(), mask).dtype == torch.float32


def test_non_targets_cannot_poison_and_teacher_gets_no_gradient():
    """Outside the targets the student rules out the teacher's only id (an infinite KL there): ignored."""
    student, teacher, mask = batch(2)
    teacher = teacher.clone().requires_grad_()
    poisoned = student.masked_fill((~mask)[..., None] & (torch.arange(5) == 0), float("-inf"))
    one_hot = torch.full((5,), float("-inf")).index_fill(0, torch.tensor([0]), 0.0)
    target = torch.where(mask[..., None], teacher, one_hot)
    loss = sdtt_loss(poisoned.log_softmax(-1), target, mask, "forward-kl")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_no_target_is_a_connected_zero():
    student, teacher, _ = batch(3)
    loss = sdtt_loss(student.log_softmax(-1), teacher, torch.zeros(3, 6, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(student.grad, torch.zeros_like(student))


def test_bad_mask():
    student, teacher, mask = batch()
    with pytest.raises(PartgmError, match="target_mask"):
        sdtt_loss(student, teacher, mask.long())
