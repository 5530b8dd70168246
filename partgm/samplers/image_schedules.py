"""The authors' per-step numbers for the image samplers (jdeschena/pgm ``image_pretrain`` and
valeoai/Halton-MaskGIT): how many tokens each step reveals, the logit multiplier of each step and the
guidance weight of each step. Pure functions of (step, steps, n), computed in float32 as theirs.

Their ``sm_temp`` *multiplies* the logits (``softmax(logits * sm_temp)``); partgm's ``--temperature``
divides them. Both apply: the logits of step k are ``logits * logit_scale(k) / temperature``."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch

from partgm.errors import PartgmError

# The Gumbel scale of their configs by sampler family: PGM's r_temp 5 (partition), MaskGIT's 4.5 (masked).
R_TEMP = {"partition": 5.0, "masked": 4.5}


def _arccos_ratio(r: torch.Tensor) -> torch.Tensor:
    """float32 ``1 - arccos(r) / (pi / 2)``: the share of tokens revealed at ratio r."""
    return 1 - torch.arccos(r) / (math.pi * 0.5)


def halton_revealed(steps: int, n: int) -> list[int]:
    """Tokens revealed after each step of the Halton samplers (both families):
    ``max(k + 1, int(n * (1 - arccos((k + 1) / S) / (pi / 2))))``, capped at n."""
    return [min(n, max(k + 1, int(_arccos_ratio(torch.tensor((k + 1) / steps)) * n))) for k in range(steps)]


def confidence_revealed(steps: int, n: int, family: Literal["pgm-image", "maskgit"]) -> list[int]:
    """Tokens revealed after each step of the confidence samplers. Both start from
    ``sche = int(n * (1 - arccos(linspace(0, 1, S)) / (pi / 2)))`` (``sche[0] = 0``, ``sche[-1] = n``).
    ``pgm-image`` (confidence_sampler_pgm): step 0 reveals 1 token, step k in 1..S-2 reveals
    ``sche[k] - sche[k-1]``, the last step the rest. ``maskgit``: after step k, ``max(sche[k], k + 1)``."""
    if steps == 1:
        return [n]
    sche = (_arccos_ratio(torch.linspace(0, 1, steps)) * n).int().tolist()
    if family == "pgm-image":
        revealed = [1] + [1 + s for s in sche[1:-1]] + [n]
    else:
        revealed = [max(s, k + 1) for k, s in enumerate(sche)]
    return [min(n, r) for r in revealed]


def step_counts(revealed: list[int]) -> list[int]:
    """Cumulative revealed counts -> tokens revealed at each step."""
    return [b - a for a, b in itertools.pairwise([0, *revealed])]


@dataclass(frozen=True)
class ImageSampling:
    """The authors' sampler options, under their names.

    ``schedule``: ``authors`` (their per-step counts, above) or ``partgm`` (``images.halton.arccos_schedule``,
    at least one per step). ``r_temp``: the confidence sampler's Gumbel scale, decaying linearly to 0
    (None: the sampler family's, ``R_TEMP``). ``sm_temp_min`` / ``sm_temp_max``: the Halton sampler's logit
    multiplier, ``linspace(min, max, S)[k] ** temp_pow``, halved for the first ``temp_warmup`` steps
    (theirs: 1, i.e. step 0 draws from ``softmax(logits * 0.5)``). ``top_k`` > 0: draw among the k
    likeliest ids. ``randomize``: roll the Halton order by a random offset per sample."""

    schedule: Literal["authors", "partgm"] = "authors"
    r_temp: float | None = None
    sm_temp_min: float = 1.0
    sm_temp_max: float = 1.0
    temp_pow: float = 1.0
    temp_warmup: int = 1
    top_k: int = -1
    randomize: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in ("authors", "partgm"):
            raise PartgmError(f"schedule must be authors or partgm, got {self.schedule!r}")
        if self.r_temp is not None and not self.r_temp >= 0:
            raise PartgmError(f"r_temp must be >= 0, got {self.r_temp}")
        if not (self.sm_temp_min > 0 and self.sm_temp_max > 0):
            raise PartgmError("sm_temp_min and sm_temp_max must be positive")
        if self.temp_warmup < 0 or self.top_k == 0 or self.top_k < -1:
            raise PartgmError("temp_warmup must be >= 0 and top_k -1 (off) or positive")

    def logit_scale(self, step: int, steps: int) -> float:
        """The Halton sampler's multiplier of the logits at ``step`` of ``steps``."""
        scale = float(torch.linspace(self.sm_temp_min, self.sm_temp_max, steps)[step]) ** self.temp_pow
        return scale * 0.5 if step < self.temp_warmup else scale

    def gumbel_scale(self, family: str) -> float:
        """The confidence sampler's Gumbel scale at step 0 (``r_temp``)."""
        return self.r_temp if self.r_temp is not None else R_TEMP.get(family, R_TEMP["masked"])


def guidance_weight(w: float, step: int, steps: int, ramp: bool) -> float:
    """The guidance weight of ``step``: theirs ramps ``w * k / (S - 1)`` (0 at the first step, w at the
    last); constant ``w`` otherwise (their MaskGIT Halton sampler)."""
    if not ramp:
        return w
    return w * step / (steps - 1) if steps > 1 else w
