"""CLI wiring for evaluation and interoperability commands."""

from __future__ import annotations

import argparse


def add_eval_commands(eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm eval genppl | lambada | choice``."""


def add_top_level_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm convert`` and ``partgm hub``."""
