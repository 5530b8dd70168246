"""Self-distillation through time (SDTT) for MDLM and PGM: model-agnostic pieces.

- ``divergences``: per-position divergences between student and teacher log-probs.
- ``teacher``: the teacher's multi-step targets and the schedule of distillation rounds.
- ``loss``: the scalar SDTT loss over the target (originally masked) positions.
- ``algorithm``: ``SDTTAlgorithm``, the objective and round switching as a training-engine algorithm
  wrapping a trained run's MDLM / PGM (imported from there: it depends on the engine).
- ``commands``: ``partgm distill`` and ``distill_run``.
"""

from partgm.distill.divergences import DEFAULT_DIVERGENCE, DIVERGENCES, distill_loss, get_divergence
from partgm.distill.loss import sdtt_loss
from partgm.distill.teacher import DistillRounds, teacher_targets, unmask_probability

__all__ = [
    "DEFAULT_DIVERGENCE",
    "DIVERGENCES",
    "DistillRounds",
    "distill_loss",
    "get_divergence",
    "sdtt_loss",
    "teacher_targets",
    "unmask_probability",
]
