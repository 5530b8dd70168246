"""The ``partgm`` command line: one module per command group, the shared flags in ``partgm.cli.args``.

Heavy imports happen inside the command functions, so ``partgm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from partgm.cli import bench, distill, evaluate, ground_truth, hub, images, lm_eval, plot, sample, train
from partgm.errors import PartgmError


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for misspelt subcommands and flags."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        words: list[str] = []
        bad = re.search(r"invalid choice: '([^']*)'", message)
        if bad:
            words = [c for a in self._actions if a.choices for c in a.choices]
        unknown = re.search(r"unrecognized arguments: (\S+)", message)
        if unknown:
            bad, words = unknown, [o for parser in _parsers(self) for o in parser._option_string_actions]
        close = difflib.get_close_matches(bad.group(1), [str(w) for w in words], n=1) if bad else []
        super().error(message + (f" (did you mean '{close[0]}'?)" if close else ""))


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and all its subcommand parsers."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser, *(q for a in subs for sp in a.choices.values() for q in _parsers(sp))]


def load_plugins() -> None:
    """Import the modules named in ``PARTGM_PLUGINS`` (comma-separated), which register algorithms,
    samplers, presets or corpora at import time. Installed packages can use entry points instead."""
    for name in filter(None, (n.strip() for n in os.environ.get("PARTGM_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PartgmError(f"PARTGM_PLUGINS names '{name}', which cannot be imported: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """Every command: each group module's ``add(sub)`` adds its commands (``eval`` subcommands come from
    ``evaluate`` and ``images``)."""
    parser = _Parser(prog="partgm", description="Partition Generative Models and masked baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add(sub)
    sample.add(sub)
    eval_sub = evaluate.add(sub)
    images.add(sub, eval_sub)
    ground_truth.add_eval(eval_sub)
    hub.add(sub)
    bench.add(sub)
    lm_eval.add(sub)
    distill.add(sub)
    plot.add(sub)
    train.add_quickstart(sub)
    _add_threads_option(parser)
    return parser


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on every (leaf) subcommand that has none of its own: torch's CPU threads
    (``partgm.threads``; default: the free cores)."""
    from partgm.cli.args import positive_int

    for q in _parsers(parser):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in q._actions)
        if q is not parser and leaf and q.prefix_chars == "-" and "--threads" not in q._option_string_actions:
            q.add_argument("--threads", type=positive_int, default=argparse.SUPPRESS,
                           help="CPU threads for torch (default: the free cores, or OMP_NUM_THREADS)")


def main(argv: list[str] | None = None) -> int:
    try:
        load_plugins()  # before parsing: the help names the plugins' algorithms, samplers and presets too
        args = build_parser().parse_args(argv)
        threads = getattr(args, "threads", None) or None  # bench's own --threads: 0 is its default
        if threads or argv is None:  # the default only for the console script itself, not in-process callers
            from partgm.threads import set_threads

            set_threads(threads)
        args.func(args)
    except PartgmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk, a path that is a file, ...: one line, not a traceback
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
