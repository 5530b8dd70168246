"""The one exception type users see: a clear, one-line message naming the problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PartgmError(Exception):
    """A user-facing error. The CLI prints ``error: <message>`` and exits with status 2."""


def unknown_choice(kind: str, name: str, choices: Iterable[str], where: str = "") -> PartgmError:
    """``unknown <kind> 'name'<where> (did you mean 'x'? choose from a, b, c)``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return PartgmError(f"unknown {kind} '{name}'{where} ({hint}choose from {', '.join(choices)})")
