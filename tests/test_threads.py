"""Thread control: a default that does not oversubscribe a loaded machine, and --threads everywhere."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from partgm import threads
from partgm.cli import _parsers, build_parser, main
from partgm.errors import PartgmError


def test_default_leaves_the_busy_cores_alone(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.7, 0.0, 0.0))
    assert threads.default_threads() == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert threads.default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert threads.default_threads() == 8
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3


def test_set_threads_and_the_flag_on_every_command(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
        for bad in (0, -2, 1.5, True):
            with pytest.raises(PartgmError, match="positive integer"):
                threads.set_threads(bad)
        parser = build_parser()
        leaves = [q for q in _parsers(parser) if q is not parser and q.prefix_chars == "-"
                  and not any(isinstance(a, argparse._SubParsersAction) for a in q._actions)]
        assert len(leaves) > 15 and all("--threads" in q._option_string_actions for q in leaves)
        seen = []
        monkeypatch.setattr(threads, "set_threads", lambda n=None: seen.append(n))
        assert main(["presets", "--vocab-size", "64", "--threads", "2"]) == 0
        assert seen == [2]
    finally:
        torch.set_num_threads(before)
