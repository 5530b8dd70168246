"""SDTT teacher targets and the schedule of distillation rounds, independent of the algorithm.

The algorithm supplies ``denoise(tokens [B, L] long, clean [B, L] bool) -> log-probs [B, L, V]`` over
the V real ids (float of any precision, no gradient needed): MDLM writes its mask id at the non-clean
positions and applies SUBS; PGM runs the training-mode partition network with groups
``clean -> 0, not clean -> 1``. At a non-clean position the output must be a proper distribution (at
least one finite log-prob); what it returns at clean positions is never used by the teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from partgm.errors import PartgmError
from partgm.samplers.common import sample_tokens
from partgm.schedules import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_INITIAL_DT = 1.0 / 1024
DEFAULT_STEPS_PER_ROUND = 10_000
DEFAULT_TEACHER_STEPS = 2


def unmask_probability(schedule: NoiseSchedule, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``(alpha_s - alpha_t) / (1 - alpha_t)`` in float64, clamped to [0, 1]: the probability that a token
    masked at time t is unmasked by time s <= t. 1 where ``alpha_t = 1`` (nothing can stay masked)."""
    alpha_t = schedule.alpha(t.double())
    alpha_s = schedule.alpha(s.double())
    denominator = 1.0 - alpha_t
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, (alpha_s - alpha_t) / safe, torch.ones_like(denominator)).clamp(
        0.0, 1.0
    )


def _per_row(value: torch.Tensor | float, batch: int, device: torch.device, name: str) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float64, device=device)
    if value.dim() == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise PartgmError(f"{name} must be a scalar or have shape [{batch}], got {tuple(value.shape)}")
    return value


@torch.no_grad()
def teacher_targets(
    denoise: Denoiser,
    z: torch.Tensor,
    masked: torch.Tensor,
    t: torch.Tensor | float,
    dt: torch.Tensor | float,
    k: int,
    schedule: NoiseSchedule,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SDTT targets for a student that sees ``z`` [B, L] (long) at times ``t`` (scalar or [B]).

    The teacher runs ``k`` ancestral steps of size ``dt`` (scalar or [B]) from ``z``: step j goes from
    ``t_j = max(t - j dt, 0)`` to ``s_j = max(t - (j + 1) dt, 0)``. At each step it calls ``denoise`` on
    the current state (clean = not ``masked`` and everything unmasked so far); each still-masked position
    is unmasked w.p. ``(alpha_s - alpha_t) / (1 - alpha_t)`` and takes a token drawn from the float64
    teacher distribution. The target of an originally masked position is the teacher's log-probs from
    the step at which it was unmasked; a position unmasked at the last step or never unmasked takes the
    last step's. Returns ``(teacher_logp [B, L, V] in denoise's dtype, target_mask [B, L] bool)`` with
    ``target_mask = masked``; ``teacher_logp`` at other positions is one of denoise's outputs there
    (unspecified, never to be used).

    Random draws, all from ``generator``, in this order at each of the first ``k - 1`` steps: the unmask
    uniforms ``torch.rand([B, L], float64)`` (position unmasked iff ``u < p``), then the tokens
    ``sample_tokens(logp[unmasked now], 1.0, generator)``: one exponential race over the [n, V] rows of
    the n positions unmasked at this step, in row-major order (float64 memory is n x V, not B x L x V).
    The last step draws nothing: its outcome does not change any target. So ``k = 1`` is one
    deterministic forward pass.
    Masked positions of ``z`` are passed to ``denoise`` with their values in ``z`` (e.g. the mask id)."""
    if k < 1:
        raise PartgmError(f"the teacher needs at least one step, got k = {k}")
    if z.dim() != 2 or masked.shape != z.shape or masked.dtype != torch.bool:
        raise PartgmError(
            f"z must be [B, L] and masked a bool tensor of the same shape, got {tuple(z.shape)} "
            f"and {tuple(masked.shape)} {masked.dtype}"
        )
    batch, device = z.shape[0], z.device
    t = _per_row(t, batch, device, "t")
    dt = _per_row(dt, batch, device, "dt")
    if bool((dt <= 0).any()):
        raise PartgmError("the teacher step dt must be positive")

    tokens = z.clone()
    still_masked = masked.clone()
    targets: torch.Tensor | None = None
    for j in range(k):
        logp = denoise(tokens, ~still_masked)
        if logp.dim() != 3 or logp.shape[:2] != z.shape:
            raise PartgmError(
                f"denoise must return log-probs [B, L, V] for z {tuple(z.shape)}, got {tuple(logp.shape)}"
            )
        if j == k - 1:
            # The last step: everything left (unmasked now or not) takes this distribution.
            if targets is None:
                return logp.clone(), masked.clone()
            targets = torch.where(still_masked[..., None], logp.to(targets.dtype), targets)
            break
        t_now = (t - j * dt).clamp(min=0.0)
        s_now = (t - (j + 1) * dt).clamp(min=0.0)
        p = unmask_probability(schedule, t_now, s_now)  # [B]
        u = torch.rand(z.shape, generator=generator, device=device, dtype=torch.float64)
        now = still_masked & (u < p[:, None])
        draws = sample_tokens(logp[now], 1.0, generator)  # [n]: float64 only for the n rows unmasked now
        if targets is None:
            targets = logp.clone()  # positions not unmasked now are overwritten at a later step
        else:
            targets = torch.where(now[..., None], logp.to(targets.dtype), targets)
        tokens = tokens.masked_scatter(now, draws.to(tokens.dtype))
        still_masked &= ~now
    assert targets is not None
    return targets, masked.clone()


@dataclass
class DistillRounds:
    """Where a multi-round SDTT run stands. Round r (from 0) trains against a teacher of step
    ``dt = initial_dt * growth**r`` (``growth`` 2: doubling; the reference grows by its number of
    teacher steps k, which is 2 by default); a round lasts ``steps_per_round`` optimizer steps counted from
    ``start_step``; at a round's end the caller copies the (raw, non-EMA) student into the teacher.
    ``num_rounds`` (optional) is the total number of rounds: ``finished`` is then True after the last.

    Checkpoint ``state_dict()`` together with the teacher's weights: a resumed run then continues with
    the same round, dt and teacher."""

    initial_dt: float = DEFAULT_INITIAL_DT
    steps_per_round: int = DEFAULT_STEPS_PER_ROUND
    num_rounds: int | None = None
    start_step: int = 0
    growth: int = 2
    round: int = 0

    def __post_init__(self) -> None:
        if not self.initial_dt > 0:
            raise PartgmError(f"initial_dt must be positive, got {self.initial_dt}")
        if self.steps_per_round < 1:
            raise PartgmError(f"steps_per_round must be at least 1, got {self.steps_per_round}")
        if self.growth < 2:
            raise PartgmError(f"growth must be at least 2, got {self.growth}")
        if self.num_rounds is not None and self.num_rounds < 1:
            raise PartgmError(f"num_rounds must be at least 1, got {self.num_rounds}")

    @property
    def dt(self) -> float:
        """The teacher's step size in the current round."""
        return self.initial_dt * float(self.growth) ** self.round

    @property
    def effective_steps(self) -> int:
        """``round(1 / dt)``: the number of sampling steps the current teacher's step size amounts to
        (1024, 512, ... from the default ``initial_dt``); the student of this round learns ``1 / (k dt)``."""
        return round(1.0 / self.dt)

    @property
    def finished(self) -> bool:
        return self.num_rounds is not None and self.round >= self.num_rounds

    def advance(self, step: int) -> bool:
        """Record that ``step`` optimizer steps (global count, the one that is checkpointed) are done.
        Returns True when a round has just ended (``step - start_step`` reached a multiple of
        ``steps_per_round`` not yet seen): the round index is then already incremented and ``dt``
        doubled, and the caller must refresh the teacher. Idempotent for a repeated ``step``; if steps
        were skipped past several boundaries, it jumps to the right round and returns True once."""
        reached = max(0, step - self.start_step) // self.steps_per_round
        if reached > self.round:
            self.round = reached
            return True
        return False

    def state_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        unknown = set(state) - set(asdict(self))
        if unknown:
            raise PartgmError(f"unknown DistillRounds state keys: {', '.join(sorted(unknown))}")
        for key, value in state.items():
            setattr(self, key, value)
        self.__post_init__()
