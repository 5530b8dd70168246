"""Per-position divergences between a student's and a teacher's distributions, given as log-probs.

Every function maps ``student_logp [..., V]`` and ``teacher_logp [..., V]`` (log-probabilities over the
same V ids) to ``[...]``: one value per position. Inputs are upcast (float32 by default, never downcast:
float64 stays float64). Ids with probability 0 (log-prob ``-inf``, e.g. ids a SUBS output rules out) are
handled as limits: ``0 * log 0 = 0`` terms are exactly 0 and give no NaN, neither forward nor backward.
Where the first argument of a KL has mass on an id the other rules out, the KL is ``+inf``, as it is
mathematically.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from partgm.errors import PartgmError

DEFAULT_DIVERGENCE = "reverse-kl"


def _upcast(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if student_logp.shape != teacher_logp.shape:
        raise PartgmError(
            f"student and teacher log-probs differ in shape: {tuple(student_logp.shape)} "
            f"vs {tuple(teacher_logp.shape)}"
        )
    common = torch.promote_types(torch.promote_types(student_logp.dtype, teacher_logp.dtype), dtype)
    return student_logp.to(common), teacher_logp.to(common)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last dim; ids with p_v = 0 contribute 0."""
    outside = torch.isneginf(logp)  # p_v = 0: the term is 0 whatever q_v is
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    safe_logp = torch.where(outside, zero, logp)
    safe_logq = torch.where(outside, zero, logq)
    return (logp.exp() * (safe_logp - safe_logq)).sum(dim=-1)


def _logp_difference(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """``log p_s - log p_t`` with 0 where both are ``-inf`` (the same id ruled out by both)."""
    both = torch.isneginf(student_logp) & torch.isneginf(teacher_logp)
    zero = torch.zeros((), dtype=student_logp.dtype, device=student_logp.device)
    return torch.where(both, zero, student_logp) - torch.where(both, zero, teacher_logp)


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL(student || teacher) = sum_v p_s (log p_s - log p_t): SDTT's default (mode seeking)."""
    return _kl(student_logp, teacher_logp)


def forward_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) = sum_v p_t (log p_t - log p_s)."""
    return _kl(teacher_logp, student_logp)


def mse_logprob(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Mean over the V ids of ``(log p_s - log p_t)^2``. Ids ruled out by both (``-inf`` in both) count
    in the mean with a 0 term; an id ruled out by only one gives ``+inf``."""
    return _logp_difference(student_logp, teacher_logp).square().mean(dim=-1)


def total_variation(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """Total variation distance on probabilities, ``0.5 * sum_v |p_s - p_t|`` in [0, 1]: the paper's TVD."""
    return 0.5 * (student_logp.exp() - teacher_logp.exp()).abs().sum(dim=-1)


def l1_logprob(student_logp: torch.Tensor, teacher_logp: torch.Tensor) -> torch.Tensor:
    """``sum_v |log p_s - log p_t|``: L1 on log-probs, NOT a total variation distance.

    Offered only to reproduce the reference SDTT code, whose divergence named ``tvd`` computes this
    quantity (a bug there: the paper's TVD is on probabilities, see ``tv``). Ids ruled out by both
    contribute 0; an id ruled out by only one gives ``+inf``."""
    return _logp_difference(student_logp, teacher_logp).abs().sum(dim=-1)


Divergence = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DIVERGENCES: dict[str, Divergence] = {
    "reverse-kl": reverse_kl,
    "forward-kl": forward_kl,
    "mse": mse_logprob,
    "tv": total_variation,
    "l1-logprob": l1_logprob,
}


def get_divergence(kind: str) -> Divergence:
    """The divergence registered as ``kind``; a PartgmError listing the choices otherwise."""
    if kind not in DIVERGENCES:
        raise PartgmError(f"unknown distillation divergence '{kind}' (choose from {', '.join(DIVERGENCES)})")
    return DIVERGENCES[kind]


def distill_loss(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    kind: str = DEFAULT_DIVERGENCE,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Per-position divergence ``[...]`` (e.g. [B, K]) between log-probs ``[..., V]`` (e.g. [B, K, V]).

    ``kind``: ``reverse-kl`` (KL(student || teacher), the default), ``forward-kl`` (KL(teacher || student)),
    ``mse`` (mean over V of squared log-prob differences), ``tv`` (``0.5 * sum |p_s - p_t|``) or
    ``l1-logprob`` (the reference's ``tvd``: ``sum |log p_s - log p_t|``). Computed in ``dtype`` or the
    inputs' wider dtype. The teacher is not detached here: pass it without a graph."""
    divergence = get_divergence(kind)
    student_logp, teacher_logp = _upcast(student_logp, teacher_logp, dtype)
    return divergence(student_logp, teacher_logp)
