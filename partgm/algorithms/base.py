"""The interface every algorithm (MDLM, complementary MDLM, PGM, AR, and outside ones) implements.

An algorithm owns its objective, knows which network it trains, and answers one question for every
consumer (samplers, zero-shot scoring, gen PPL, benchmarks, distillation, guidance): *the logits at
these positions, given these clean tokens* (``Algorithm.logits``). Nothing outside an algorithm
dispatches on its name.

Shapes: B batch, L sequence length, K query positions, N real token ids (no mask id).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from partgm.config import RunConfig
from partgm.models.config import ModelConfig
from partgm.schedules import NoiseSchedule, antithetic_times, get_schedule


@dataclass(frozen=True)
class TokenSpace:
    """What the data looks like: N real ids, sequences of ``length``, a BOS id at position 0 (None for
    data without one, e.g. image grids), ``num_classes`` labels (0: unconditional) and, for images,
    the ``grid`` (height, width) with ``length == height * width`` in raster order."""

    vocab_size: int
    length: int
    bos_id: int | None = None
    num_classes: int = 0
    grid: tuple[int, int] | None = None

    @property
    def null_class(self) -> int:
        """The label id that means "no class" (classifier-free guidance, label dropout)."""
        return self.num_classes

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> TokenSpace:
        """From a prepared-data header (``data.json`` of a run)."""
        grid = header.get("grid")
        return cls(
            vocab_size=int(header["vocab_size"]),
            length=int(header["length"]),
            bos_id=header.get("bos_id"),
            num_classes=int(header.get("num_classes", 0)),
            grid=tuple(grid) if grid else None,
        )


@dataclass
class Batch:
    """tokens [B, L] long; labels [B] long class ids or None (unconditional data)."""

    tokens: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, rows: slice | torch.Tensor) -> Batch:
        return Batch(self.tokens[rows], None if self.labels is None else self.labels[rows])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device), None if self.labels is None else self.labels.to(device))


@dataclass
class Context:
    """What a denoiser may read: tokens [B, L] (only the ``clean`` [B, L] bool positions are read),
    labels [B] or None. ``packed`` optionally gives the clean positions already packed:
    (positions [B, Lc] right-padded, valid [B, Lc] bool or None when no row is padded); samplers that
    know their order pass it, others let ``packed_clean`` compute it."""

    tokens: torch.Tensor
    clean: torch.Tensor
    labels: torch.Tensor | None = None
    packed: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def with_labels(self, labels: torch.Tensor | None) -> Context:
        return replace(self, labels=labels)

    def packed_clean(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(clean positions [B, Lc] in position order, right-padded with position 0; valid [B, Lc] or None)."""
        if self.packed is not None:
            return self.packed
        n_clean = self.clean.sum(dim=1)  # [B]
        width = int(n_clean.max())
        order = torch.argsort((~self.clean).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=order.device) < n_clean[:, None]
        return order.masked_fill(~valid, 0), None if bool(valid.all()) else valid


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [B, L, V], targets [B, L] -> negative log-likelihood [B, L] in float32. Over the rows of
    logits as they lie (classes last): a transposed input would copy all B x L x V logits first."""
    flat = torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), reduction="none")
    return flat.view_as(targets)


class Algorithm:
    """Base class. Subclasses set ``name``, ``model_config`` (the family config class of their network),
    ``sampler_family`` (the kind of denoiser they are, where samplers are looked up) and ``samplers``
    (the samplers they offer, the default first; empty: every sampler of the family), and implement ``build_model``,
    ``training_loss`` and ``logits`` (and ``validation_terms`` when the validation bound is not MDLM's
    masked estimator).

    Hooks the training engine calls, all optional: ``draw_times``, ``after_optimizer_step``,
    ``state_dict`` / ``load_state_dict`` (extra training state, restored bit for bit) and
    ``extra_metrics``.
    """

    name: ClassVar[str] = "base"
    model_config: ClassVar[type[ModelConfig]] = ModelConfig
    sampler_family: ClassVar[str] = ""
    samplers: ClassVar[tuple[str, ...]] = ()
    # True when the model gives exact log-likelihoods left to right (zero-shot scoring is then exact).
    exact_likelihood: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that names another sampler family without declaring its samplers offers the family's."""
        super().__init_subclass__(**kwargs)
        if "sampler_family" in cls.__dict__ and "samplers" not in cls.__dict__:
            cls.samplers = ()

    def __init__(self, space: TokenSpace, schedule: NoiseSchedule | str = "loglinear", label_dropout: float = 0.0):
        self.space = space
        self.schedule = get_schedule(schedule) if isinstance(schedule, str) else schedule
        self.label_dropout = label_dropout

    @classmethod
    def from_config(cls, cfg: RunConfig, space: TokenSpace) -> Algorithm:
        return cls(space, cfg.train.noise_schedule, cfg.train.label_dropout)

    @property
    def vocab_size(self) -> int:
        return self.space.vocab_size

    @property
    def bos_id(self) -> int | None:
        return self.space.bos_id

    # --- the network and its objective ---------------------------------------------------------------
    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        """A freshly initialised network for ``self.space``."""
        raise NotImplementedError

    def training_loss(
        self, model: nn.Module, batch: Batch, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scalar loss to minimise for batch [B, L] at times t [B]."""
        raise NotImplementedError

    def validation_nelbo(
        self, model: nn.Module, batch: Batch, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, int]:
        """(sum of per-token NELBO terms in float64, number of tokens) for batch [B, L] at times t [B].
        ``exp(total sum / total count)`` over a split is the validation perplexity (an upper bound)."""
        uniforms = torch.rand(batch.tokens.shape, generator=generator, device=batch.tokens.device)
        sums, count = self.validation_terms(model, batch, t, uniforms)
        return sums.sum(), count * len(batch)

    def validation_terms(
        self, model: nn.Module, batch: Batch, t: torch.Tensor, uniforms: torch.Tensor
    ) -> tuple[torch.Tensor, int]:
        """(per-sequence NELBO sums [B] float64, tokens per sequence) at times t [B]; token l is masked
        where ``uniforms[b, l] < 1 - alpha(t_b)`` (uniforms [B, L] in [0, 1)). Default: MDLM's estimator,
        ``w(t) * -log p`` summed over the masked tokens, via ``masked_nelbo_terms``."""
        masked = uniforms < (1.0 - self.schedule.alpha(t))[:, None]
        return self.masked_nelbo_terms(model, batch, masked, t).double().sum(dim=1), batch.tokens.shape[1]

    # --- the denoiser ---------------------------------------------------------------------------------
    def logits(self, model: nn.Module, context: Context, query_positions: torch.Tensor) -> torch.Tensor:
        """Logits [B, K, N] over the real ids at query_positions [B, K], given the clean tokens of
        ``context`` only. Autoregressive models read the tokens before each query position instead."""
        raise NotImplementedError

    def denoise_logprobs(
        self, model: nn.Module, tokens: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Log-probs [B, L, N] over the real ids at every position of tokens [B, L] given its ``clean``
        [B, L] positions only (distillation's denoiser). Only the non-clean positions are meaningful.
        Generic via ``logits``; an algorithm may run a cheaper or training-mode path instead."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        return self.logits(model, Context(tokens, clean, labels), positions).log_softmax(-1)

    def masked_nelbo_terms(
        self, model: nn.Module, batch: Batch, masked: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Per-token NELBO terms [B, L] (float32): ``w(t) * -log p(x_l | unmasked tokens)`` at the
        ``masked`` [B, L] positions, 0 elsewhere (zero-shot scoring). Generic via ``logits``."""
        x = batch.tokens
        positions = torch.arange(x.shape[1], device=x.device).expand_as(x)
        logits = self.logits(model, Context(x, ~masked, batch.labels), positions)
        nll = token_nll(logits, x)
        return torch.where(masked, self.schedule.loss_weight(t)[:, None] * nll, torch.zeros_like(nll))

    def null_labels(self, batch_size: int, device: torch.device | str) -> torch.Tensor | None:
        """[B] labels of the null class (unconditional logits), or None for unconditional models."""
        if not self.space.num_classes:
            return None
        return torch.full((batch_size,), self.space.null_class, dtype=torch.long, device=device)

    def drop_labels(self, labels: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor | None:
        """Training-time label dropout: each label becomes the null class w.p. ``label_dropout``."""
        if labels is None or self.label_dropout <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator, device=labels.device) < self.label_dropout
        return labels.masked_fill(drop, self.space.null_class)

    # --- training-engine hooks ------------------------------------------------------------------------
    def draw_times(self, n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """Training times [n] for a global batch (default: antithetic)."""
        return antithetic_times(n, generator, device)

    def after_optimizer_step(self, trainer: Any, step: int) -> None:
        """Called after each optimizer step (and EMA update), e.g. to switch a distillation round."""

    def state_dict(self) -> dict[str, Any]:
        """Extra state saved with the training state and restored bit for bit on resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def extra_metrics(self, model: nn.Module, trainer: Any) -> dict[str, float]:
        """Extra evaluation metrics logged beside the validation perplexity."""
        return {}
