"""``token_nll`` over the logits as they lie equals the class-dim-1 cross-entropy (value and gradient)."""

import torch
import torch.nn.functional as F

from partgm.algorithms.base import token_nll


def test_token_nll_equals_the_transposed_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 50, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (3, 17), generator=g)
    weights = torch.rand(3, 17, generator=g)
    reference = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), logits)
    nll = token_nll(logits, targets)
    (grad,) = torch.autograd.grad((nll * weights).sum(), logits)
    assert nll.shape == targets.shape and nll.dtype == torch.float32
    torch.testing.assert_close(nll, reference, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=0, atol=2e-6)
