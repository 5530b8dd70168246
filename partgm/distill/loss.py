"""The SDTT objective: the student's one-step distribution against the teacher's multi-step targets."""

from __future__ import annotations

import torch

from partgm.distill.divergences import DEFAULT_DIVERGENCE, distill_loss
from partgm.errors import PartgmError


def sdtt_loss(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    target_mask: torch.Tensor,
    kind: str = DEFAULT_DIVERGENCE,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Scalar loss (in ``dtype``, or the inputs' wider dtype): the mean over target positions (``target_mask`` [B, L] True) of the
    per-position divergence ``kind`` between ``student_logp`` [B, L, V] and ``teacher_logp`` [B, L, V].

    Only the target positions enter the computation (they are gathered first), so whatever the
    distributions are elsewhere (e.g. one-hot carry-over at clean positions) can never make the loss or
    its gradient NaN. The teacher is detached. With no target position the loss is an exact 0 that is
    still connected to the student's graph (every rank of a DDP run then takes part in the backward)."""
    if target_mask.dtype != torch.bool or target_mask.shape != student_logp.shape[:-1]:
        raise PartgmError(
            f"target_mask must be bool of shape {tuple(student_logp.shape[:-1])}, "
            f"got {target_mask.dtype} {tuple(target_mask.shape)}"
        )
    per_position = distill_loss(student_logp[target_mask], teacher_logp.detach()[target_mask], kind, dtype)  # [n]
    count = int(target_mask.sum())
    return per_position.sum() / max(count, 1)
