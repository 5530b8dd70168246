"""Declared ranges of config fields: a config dataclass maps field names to a ``Range`` in its
``ranges`` and ``Checked.check`` raises a one-line error naming the first field out of range."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from partgm.errors import PartgmError


@dataclass(frozen=True)
class Range:
    """``low <= value < high``; ``low_open``: ``low < value``; ``high_closed``: ``value <= high``.
    Floats must also be finite. ``says``: the error's wording after ``must be`` (default: the interval)."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_closed: bool = False
    says: str = ""

    def holds(self, value: float) -> bool:
        above = self.low < value if self.low_open else self.low <= value
        below = value <= self.high if self.high_closed else value < self.high
        return above and below and math.isfinite(value)

    def check(self, where: str, value: float) -> None:
        if not self.holds(value):
            raise PartgmError(f"{where}={value} must be {self.says or self._interval()}")

    def _interval(self) -> str:
        if self.high == math.inf and not self.low_open:
            return f">= {self.low}"
        if self.high == math.inf:
            return f"> {self.low}"
        return f"in {'(' if self.low_open else '['}{self.low}, {self.high}{']' if self.high_closed else ')'}"


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
FRACTION = Range(0.0, 1.0)  # [0, 1)


class Checked:
    """Mixin for config dataclasses: ``ranges`` declares each bounded field (tuple fields: every item);
    ``check`` tests them, and subclasses add their cross-field rules by extending it."""

    ranges: ClassVar[dict[str, Range]] = {}

    def check(self, where: str) -> None:
        for name, bound in self.ranges.items():
            value: Any = getattr(self, name)
            if isinstance(value, tuple):
                for i, item in enumerate(value):
                    bound.check(f"{where}.{name}[{i}]", item)
            else:
                bound.check(f"{where}.{name}", value)
