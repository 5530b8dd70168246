"""SDTT as a training algorithm: wraps a trained run's algorithm (MDLM, PGM, ...) for the training engine.

The student is the Trainer's model; the teacher is a frozen copy of the same network held here. Each
training step masks the real sequences at the Trainer's (antithetic) times t, lets the teacher take
``teacher_steps`` ancestral steps of size dt from that ``z_t`` (no gradient, eval mode), and trains one
student forward pass on ``z_t`` to match the teacher's targets at the masked positions. Both denoise
through ``Algorithm.denoise_logprobs``, so the wrapper knows nothing of the network; everything else
(network, validation NELBO, the denoiser for samplers) is the wrapped algorithm's, so a distilled run
saves, loads and samples as a plain run of the wrapped algorithm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from partgm.algorithms.base import Algorithm, Batch
from partgm.config import DistillConfig, RunConfig
from partgm.distill.loss import sdtt_loss
from partgm.distill.teacher import DistillRounds, teacher_targets
from partgm.errors import PartgmError
from partgm.run.checkpoint import atomic_write_json, save_checkpoint, write_run_files
from partgm.run.layout import ROUNDS

LOSS_DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.bfloat16}
ROUNDS_DIR = ROUNDS


def round_dir(run_dir: Path, completed: int) -> Path:
    """The run directory of the student after ``completed`` rounds: ``RUN/rounds/round-N``."""
    return Path(run_dir) / ROUNDS_DIR / f"round-{completed}"


class SDTTAlgorithm(Algorithm):
    """Self-distillation through time around ``base``. ``teacher``: the network the first round's teacher
    starts from (a model of ``base``; copied, then frozen). ``config``: the ``distill`` section."""

    def __init__(self, base: Algorithm, config: DistillConfig, teacher: nn.Module):
        super().__init__(base.space, base.schedule, base.label_dropout)
        self.base, self.config = base, config
        self.name, self.model_config, self.sampler_family = base.name, base.model_config, base.sampler_family
        self.samplers = base.samplers
        self.exact_likelihood = base.exact_likelihood
        self.teacher = teacher.eval().requires_grad_(False)
        self.rounds = DistillRounds(config.initial_dt, config.steps_per_round, config.rounds,
                                    growth=config.teacher_steps)  # dt *= k each round, as the reference

    @classmethod
    def from_config(cls, cfg: RunConfig, space: Any) -> Algorithm:
        raise NotImplementedError("SDTTAlgorithm is built by `partgm distill` around a trained run's algorithm")

    # --- delegated to the wrapped algorithm ----------------------------------------------------------
    def build_model(self, model_cfg):
        return self.base.build_model(model_cfg)

    def validation_nelbo(self, model, batch, t, generator=None):
        return self.base.validation_nelbo(model, batch, t, generator)

    def logits(self, model, context, query_positions):
        return self.base.logits(model, context, query_positions)

    def denoise_logprobs(self, model, tokens, clean, labels=None):
        return self.base.denoise_logprobs(model, tokens, clean, labels)

    def masked_nelbo_terms(self, model, batch, masked, t):
        return self.base.masked_nelbo_terms(model, batch, masked, t)

    def draw_times(self, n, generator, device):
        return self.base.draw_times(n, generator, device)

    # --- the objective -------------------------------------------------------------------------------
    def draw_masked(self, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """[B, L] bool: each token masked w.p. ``1 - alpha_t``, as in MDLM / PGM training."""
        u = torch.rand(x.shape, generator=generator, device=x.device)
        return u < (1.0 - self.schedule.alpha(t))[:, None]

    def targets(
        self, batch: Batch, masked: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """The teacher's target log-probs [B, L, N] for the student that sees ``batch`` with ``masked``
        [B, L] hidden at times t [B] (meaningful at the masked positions only)."""
        self.teacher.to(batch.tokens.device)
        z = batch.tokens.masked_fill(masked, 0)  # the masked ids are never read: no ground truth leaks

        def denoise(tokens: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
            return self.base.denoise_logprobs(self.teacher, tokens, clean, batch.labels)

        logp, _ = teacher_targets(
            denoise, z, masked, t, self.rounds.dt, self.config.teacher_steps, self.schedule, generator
        )
        return logp

    def training_loss(self, model, batch, t, generator=None):
        """Mean divergence over the masked positions between the student's one step and the teacher's
        ``teacher_steps`` steps of size dt, from the same ``z_t``."""
        masked = self.draw_masked(batch.tokens, t, generator)
        batch = Batch(batch.tokens, self.drop_labels(batch.labels, generator))
        teacher_logp = self.targets(batch, masked, t, generator)
        student_logp = self.base.denoise_logprobs(model, batch.tokens.masked_fill(masked, 0), ~masked, batch.labels)
        dtype = LOSS_DTYPES[self.config.loss_precision]
        return sdtt_loss(student_logp.to(dtype), teacher_logp.to(dtype), masked, self.config.divergence, dtype)

    # --- training-engine hooks -----------------------------------------------------------------------
    @torch.no_grad()
    def after_optimizer_step(self, trainer: Any, step: int) -> None:
        """At a round's end: the student optionally continues from its EMA weights (and the EMA restarts
        from them, as the reference's ``use_ema_on_growth``), the teacher becomes the student (raw or EMA
        weights), and the student is exported as ``RUN/rounds/round-N``."""
        if not self.rounds.advance(step):
            return
        if self.config.swap_ema_on_round:
            trainer.ema.copy_to(trainer.model)
            trainer.ema.reset(trainer.model)
        if self.config.teacher_weights == "ema":
            self.teacher.load_state_dict(trainer.ema.model_state_dict(trainer.model))
        else:
            self.teacher.load_state_dict(trainer.model.state_dict())
        if trainer.dist.is_main:
            self.export_round(trainer, step)

    def export_round(self, trainer: Any, step: int) -> Path:
        """Write the current student as a plain run directory of the wrapped algorithm."""
        out = round_dir(trainer.run_dir, self.rounds.round)
        write_run_files(out, trainer.cfg, trainer.data)
        save_checkpoint(
            out, step, trainer.model.state_dict(), trainer.ema.model_state_dict(trainer.model), {"step": step}, 1
        )
        k = self.config.teacher_steps
        last_dt = self.rounds.initial_dt * float(self.rounds.growth) ** (self.rounds.round - 1)
        atomic_write_json(out / "distill.json", {
            "round": self.rounds.round, "step": step, "teacher_dt": last_dt, "teacher_steps": k,
            "student_steps": round(1.0 / (k * last_dt)), "source": trainer.cfg.train.init_from,
        })
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds.state_dict(),
            "teacher": {k: v.detach().clone() for k, v in self.teacher.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the round (hence dt) and the teacher. ``distill.rounds`` may change on resume (e.g. to
        add rounds); the round length and initial dt may not."""
        saved = state["rounds"]
        for key in ("initial_dt", "steps_per_round", "start_step", "growth"):
            if saved[key] != getattr(self.rounds, key):
                raise PartgmError(
                    f"cannot resume: the distillation's {key} changed ({saved[key]} -> {getattr(self.rounds, key)})"
                )
        self.rounds.round = int(saved["round"])
        self.teacher.load_state_dict(state["teacher"])

    def extra_metrics(self, model, trainer):
        return {"distill_round": float(self.rounds.round), "distill_dt": self.rounds.dt,
                **self.base.extra_metrics(model, trainer)}
