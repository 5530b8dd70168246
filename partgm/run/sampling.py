"""What a sampling command asks for, gathered once: ``Draws`` (options, sampler, counts, seed, precision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from partgm.errors import PartgmError
from partgm.precision import PRECISIONS
from partgm.samplers import SamplingOptions


@dataclass(frozen=True)
class Draws:
    """``num_samples`` samples (images: per class) drawn ``batch`` at a time from one generator seeded
    ``seed``, by ``sampler`` (a name of the algorithm's family, ``auto``, or a ``Sampler``) with
    ``options``, under autocast ``precision`` (``auto`` | ``fp32`` | ``bf16``; see ``generate``)."""

    options: SamplingOptions = field(default_factory=SamplingOptions)
    sampler: Any = "auto"
    num_samples: int = 4
    batch: int = 4
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.batch < 1:
            raise PartgmError("the number of samples and the batch size must be positive")
        if self.precision not in PRECISIONS:
            raise PartgmError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def sampler_name(self) -> str:
        """The sampler as recorded: its name (``auto`` stays ``auto``)."""
        return self.sampler if isinstance(self.sampler, str) else self.sampler.name
