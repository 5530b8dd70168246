"""What every sampler shares: prompts, the float64 token draw and the decoding plan.

Shapes: B batch, L sequence length, V vocabulary, S steps, W the widest step of a batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from tqdm import tqdm

from partgm.errors import PartgmError
from partgm.schedules import NoiseSchedule

FINAL_TIME = 1e-5  # the last time of the grid linspace(1, FINAL_TIME, T + 1), as in MDLM


# Below this the logits / temperature overflow float32 (and bf16) for ordinary logits.
MIN_TEMPERATURE = 1e-3


@dataclass
class Prompt:
    """tokens [B, L] long, fixed [B, L] bool: fixed positions are clean from the start and never change;
    the values of ``tokens`` elsewhere are ignored. labels [B] long: the class of each sample
    (class-conditional models; None: unconditional / null class)."""

    tokens: torch.Tensor
    fixed: torch.Tensor
    labels: torch.Tensor | None = None


def make_prompt(
    batch_size: int,
    length: int,
    bos_id: int | None,
    prefix_ids: list[int] | None = None,
    fixed: dict[int, int] | None = None,
    device: torch.device | str = "cpu",
    labels: list[int] | torch.Tensor | None = None,
) -> Prompt:
    """BOS at position 0 (when the data has one), ``prefix_ids`` after it, and ``fixed`` {position: id}
    anywhere (infilling), the same for every row; ``labels`` [B] the classes. Token ids are checked
    against the vocabulary by ``generate``."""
    prefix_ids = list(prefix_ids or [])
    fixed = dict(fixed or {})
    first = 0 if bos_id is None else 1
    if first + len(prefix_ids) > length:
        raise PartgmError(
            f"the prompt has {first + len(prefix_ids)} tokens ({'BOS + ' if first else ''}{len(prefix_ids)}) "
            f"but the sequence length is {length}"
        )
    entries = {} if bos_id is None else {0: bos_id}
    entries.update({first + i: token for i, token in enumerate(prefix_ids)})
    for position, token in fixed.items():
        if not first <= position < length:
            raise PartgmError(
                f"fixed position {position} is outside {first}..{length - 1}"
                + (" (position 0 holds BOS)" if first else "")
            )
        if position in entries and entries[position] != token:
            raise PartgmError(
                f"position {position} is given twice: by the prefix ({entries[position]}) and as {token}"
            )
        entries[position] = token
    if entries and min(entries.values()) < 0:
        raise PartgmError(f"token ids must be non-negative, got {min(entries.values())}")
    tokens = torch.zeros(batch_size, length, dtype=torch.long, device=device)
    is_fixed = torch.zeros(batch_size, length, dtype=torch.bool, device=device)
    if entries:
        positions = torch.tensor(list(entries), device=device)
        tokens[:, positions] = torch.tensor(list(entries.values()), device=device)
        is_fixed[:, positions] = True
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
        if labels.numel() == 1:
            labels = labels.expand(batch_size)
        if labels.numel() != batch_size:
            raise PartgmError(f"{labels.numel()} labels for {batch_size} samples")
    return Prompt(tokens, is_fixed, labels)


@dataclass
class SamplingOptions:
    """How tokens are chosen. ``steps`` denoising steps (forward passes, for the parallel samplers);
    ``nucleus`` < 1 keeps the smallest set of tokens whose probability reaches it; ``temperature``
    divides the logits; ``guidance`` w > 0 is classifier-free guidance ``(1 + w) cond - w uncond``
    (class-conditional models), ``constant`` or ramped ``linear``-ly from 0 to w over the steps;
    ``auto``: the sampler's own choice (the image samplers: the authors'; every other sampler: constant)."""

    steps: int = 128
    nucleus: float = 1.0
    temperature: float = 1.0
    guidance: float = 0.0
    guidance_schedule: Literal["auto", "constant", "linear"] = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise PartgmError(f"steps must be a positive integer, got {self.steps!r}")
        if not 0.0 < self.nucleus <= 1.0:
            raise PartgmError(f"nucleus must be in (0, 1], got {self.nucleus}")
        if not MIN_TEMPERATURE <= self.temperature < math.inf:
            raise PartgmError(f"temperature must be a finite number >= {MIN_TEMPERATURE:g}, got {self.temperature} "
                              "(lower ones overflow the logits; for near-greedy draws use 0.001)")
        if not 0.0 <= self.guidance < math.inf:
            raise PartgmError(f"guidance must be a finite number >= 0, got {self.guidance}")
        if self.guidance_schedule not in ("auto", "constant", "linear"):
            raise PartgmError(f"guidance_schedule must be auto, constant or linear, got {self.guidance_schedule!r}")

    def guidance_at(self, fraction: float) -> float:
        """The guidance weight at ``fraction`` in [0, 1] of the way through sampling."""
        return self.guidance * (fraction if self.guidance_schedule == "linear" else 1.0)


def denoiser_logits(
    algorithm: Any, model: torch.nn.Module, context: Any, query_positions: torch.Tensor,
    options: SamplingOptions, fraction: float = 1.0,
) -> torch.Tensor:
    """``algorithm.logits`` [B, K, N] with classifier-free guidance when ``options`` asks for it and the
    context has labels: one batched call on the labels and on the null class."""
    w = options.guidance_at(fraction)
    if w == 0.0 or context.labels is None:
        return algorithm.logits(model, context, query_positions)
    null = algorithm.null_labels(len(context.labels), context.labels.device)
    packed = context.packed
    both = type(context)(
        torch.cat([context.tokens, context.tokens]),
        torch.cat([context.clean, context.clean]),
        torch.cat([context.labels, null]),
        None if packed is None else (
            torch.cat([packed[0], packed[0]]), None if packed[1] is None else torch.cat([packed[1], packed[1]])
        ),
    )
    cond, uncond = algorithm.logits(model, both, torch.cat([query_positions, query_positions])).float().chunk(2)
    return (1.0 + w) * cond - w * uncond


def choose_tokens(logits: torch.Tensor, options: SamplingOptions, generator: torch.Generator | None) -> torch.Tensor:
    """logits [..., V] -> ids [...]: temperature, then the float64 (nucleus-filtered) Gumbel-max draw."""
    if options.temperature != 1.0:
        logits = logits.float() / options.temperature
    return sample_tokens(logits, options.nucleus, generator)


def token_probs(logits: torch.Tensor, nucleus: float = 1.0) -> torch.Tensor:
    """logits [..., V] -> float64 weights [..., V]: the softmax, top-p filtered when ``nucleus < 1`` (the
    smallest set of tokens whose mass reaches ``nucleus``, the top token always kept). Filtered weights
    are not renormalised: ``sample_categorical`` is invariant to the scale."""
    probs = logits.double().softmax(dim=-1)
    if nucleus < 1.0:
        sorted_probs, index = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= nucleus
        probs = probs.scatter(-1, index, sorted_probs.masked_fill(outside, 0.0))
    return probs


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of weights [..., V] (any positive scale) by the exponential race (Gumbel-max):
    ``argmax(p / E)`` with ``E ~ Exp(1)`` drawn from ``generator``. Returns [...] long."""
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise.clamp_(min=torch.finfo(noise.dtype).tiny)).argmax(dim=-1)


def sample_tokens(logits: torch.Tensor, nucleus: float, generator: torch.Generator | None) -> torch.Tensor:
    """logits [..., V] -> ids [...] drawn from the float64 (nucleus-filtered) softmax. Without nucleus
    filtering the weights are ``exp(logits - max)`` in float64: the softmax without its normalisation,
    which divides a row by one number and so cannot change the draw (the same noise, the same ids)."""
    if nucleus < 1.0:
        return sample_categorical(token_probs(logits, nucleus), generator)
    x = logits.double()
    return sample_categorical((x - x.amax(dim=-1, keepdim=True)).exp_(), generator)


def random_order(fixed: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """fixed [B, L] bool -> positions [B, L]: the fixed ones first (in position order), then the others in
    a uniformly random order per row."""
    keys = torch.rand(fixed.shape, generator=generator, device=fixed.device).masked_fill(fixed, -1.0)
    return keys.argsort(dim=1, stable=True)


@dataclass
class DecodeStep:
    """One step of a plan. start [B]: clean tokens per row before the step (the first ``start`` positions
    of the order); clean_width = max(start); clean_valid [B, clean_width] marks the real ones (None when
    every row has the same number); query_positions [B, W] the positions decoded now, right-padded with
    position 0 where query_valid [B, W] is False."""

    start: torch.Tensor
    clean_width: int
    clean_valid: torch.Tensor | None
    query_positions: torch.Tensor
    query_valid: torch.Tensor

    def write(self, buffer: torch.Tensor, values: torch.Tensor) -> None:
        """Scatter values [B, W] to the query positions of buffer [B, L + 1]; padded slots land in the
        spare last column, so they can never overwrite a real position."""
        spare = buffer.shape[1] - 1
        buffer.scatter_(1, torch.where(self.query_valid, self.query_positions, spare), values)


class DecodePlan:
    """Which positions each step decodes: a random order per row (fixed positions first) and counts [S, B]
    of positions decoded per step and row. Steps where no row decodes anything are dropped, so
    ``len(plan)`` is the number of forward passes. All shapes are known on the host after one sync."""

    def __init__(self, fixed: torch.Tensor, order: torch.Tensor, counts: torch.Tensor):
        kept = counts.any(dim=1)
        counts = counts[kept]
        n_fixed = fixed.sum(dim=1)
        self.order = order  # [B, L]
        self.bounds = torch.cat([n_fixed[None], n_fixed[None] + counts.cumsum(dim=0)])  # [S + 1, B]
        self._host_bounds: list[list[int]] = self.bounds.tolist()
        self.schedule_steps: list[int] = kept.nonzero().flatten().tolist()  # each step's index in the schedule

    @classmethod
    def uniform(cls, fixed: torch.Tensor, steps: int, generator: torch.Generator | None) -> DecodePlan:
        """``min(steps, n)`` steps for n the most positions any row generates; each row's positions are
        spread over them as evenly as possible (counts differ by at most one)."""
        order = random_order(fixed, generator)
        n_free = (~fixed).sum(dim=1)  # [B]
        n_steps = min(steps, int(n_free.max()))
        done = (
            torch.arange(n_steps + 1, device=fixed.device)[:, None] * n_free // max(n_steps, 1)
        )  # [S + 1, B]
        return cls(fixed, order, done.diff(dim=0))

    @classmethod
    def binomial(
        cls, fixed: torch.Tensor, steps: int, schedule: NoiseSchedule, generator: torch.Generator | None
    ) -> DecodePlan:
        """The masked-diffusion schedule: ``steps`` steps on ``t_k = linspace(1, 1e-5, steps + 1)``, each
        still-masked position decoded w.p. ``(alpha_s - alpha_t) / (1 - alpha_t)``, then a final step
        (``alpha_s = 1``) for what is left. Per row the counts are therefore successive
        ``Binomial(#remaining, (alpha_s - alpha_t) / (1 - alpha_t))`` draws. They are drawn at once, without
        a loop over steps: as the histogram of each position's decoding step, which is independent across
        positions with CDF ``(alpha(s_k) - alpha(1)) / (1 - alpha(1))`` after step k (a telescoping
        product)."""
        order = random_order(fixed, generator)
        device = fixed.device
        t = torch.linspace(1.0, FINAL_TIME, steps + 1, dtype=torch.float64, device=device)
        alpha = schedule.alpha(t)
        alpha_s = torch.cat([alpha[1:], alpha.new_ones(1)])  # [steps + 1]: the final step ends at alpha = 1
        cdf = (alpha_s - alpha[0]) / (1.0 - alpha[0])
        u = torch.rand(fixed.shape, generator=generator, device=device, dtype=torch.float64)
        step = torch.searchsorted(cdf, u, right=True).masked_fill(fixed, steps + 1)  # [B, L], cdf[-1] = 1 > u
        counts = torch.zeros(fixed.shape[0], steps + 2, dtype=torch.long, device=device)
        counts.scatter_add_(1, step, torch.ones_like(step))
        return cls(fixed, order, counts[:, :-1].T)

    def __len__(self) -> int:
        return len(self._host_bounds) - 1

    def __iter__(self) -> Iterator[DecodeStep]:
        for k in range(len(self)):
            lo, hi = self._host_bounds[k], self._host_bounds[k + 1]
            width = max(h - l for l, h in zip(lo, hi))
            start, end = self.bounds[k], self.bounds[k + 1]
            slots = torch.arange(width, device=start.device)
            ranks = start[:, None] + slots  # [B, W]
            valid = ranks < end[:, None]
            positions = self.order.gather(1, ranks.clamp(max=self.order.shape[1] - 1))
            clean_width = max(lo)
            clean_valid = None
            if min(lo) != clean_width:
                clean_valid = torch.arange(clean_width, device=start.device) < start[:, None]
            yield DecodeStep(start, clean_width, clean_valid, positions.masked_fill(~valid, 0), valid)


def progress(plan: DecodePlan, options: SamplingOptions, desc: str) -> Iterator[DecodeStep]:
    """The steps of ``plan``, under a progress bar (``options.progress``) that counts the ``options.steps``
    steps asked for: the plan drops steps that decode nothing, the bar still counts them."""
    with tqdm(total=options.steps, disable=not options.progress, desc=desc) as bar:
        for index, step in zip(plan.schedule_steps, plan):
            yield step
            bar.update(min(index + 1, options.steps) - bar.n)
        bar.update(options.steps - bar.n)


def remaining_queries(
    clean: torch.Tensor, n_clean: list[int]
) -> tuple[tuple[torch.Tensor, torch.Tensor | None], torch.Tensor, torch.Tensor]:
    """clean [B, L] bool with ``n_clean`` (host counts per row) -> (packed: clean positions [B, C]
    right-padded with 0 and their valid [B, C] or None, query [B, W]: every position not clean yet,
    padded with 0, query_valid [B, W]); C = max clean, W = L - min clean."""
    length = clean.shape[1]
    order = (~clean).to(torch.int8).argsort(dim=1, stable=True)  # [B, L]: clean first
    width_clean, width_free = max(n_clean), length - min(n_clean)
    slots = torch.arange(length, device=clean.device)
    n_clean_t = torch.tensor(n_clean, device=clean.device)
    clean_valid = None if min(n_clean) == width_clean else slots[:width_clean] < n_clean_t[:, None]
    ranks = (n_clean_t[:, None] + slots[:width_free]).clamp(max=length - 1)  # [B, W]
    query_valid = slots[:width_free] < (length - n_clean_t)[:, None]
    query = order.gather(1, ranks).masked_fill(~query_valid, 0)
    packed = order[:, :width_clean]
    return (packed if clean_valid is None else packed.masked_fill(~clean_valid, 0), clean_valid), query, query_valid


def with_spare_column(tokens: torch.Tensor) -> torch.Tensor:
    """[B, L] -> [B, L + 1]: a copy with a spare last column for ``DecodeStep.write``."""
    return F.pad(tokens, (0, 1))
