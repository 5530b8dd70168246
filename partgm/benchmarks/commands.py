"""CLI wiring for ``partgm bench``."""

from __future__ import annotations

import argparse


def add_bench_command(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm bench sample | train``."""
