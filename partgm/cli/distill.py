"""``partgm distill RUN_DIR --run-dir OUT [overrides]``: SDTT rounds from a trained MDLM / PGM run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


class _RunDirThenOverrides(argparse.Action):
    """``--run-dir OUT [OVERRIDES...]``: argparse leaves positionals that follow an option unmatched once
    RUN_DIR is taken, so the overrides written after ``--run-dir OUT`` are collected here."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.run_dir_out = values[0]
        namespace.trailing_overrides = getattr(namespace, "trailing_overrides", []) + list(values[1:])


class _ResumeThenOverrides(argparse.Action):
    """``--resume [OVERRIDES...]``: the overrides written after ``--resume`` are collected too."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.resume = True
        namespace.trailing_overrides = getattr(namespace, "trailing_overrides", []) + list(values)


def cmd_distill(args: argparse.Namespace) -> None:
    from partgm.distill.run import distill_run

    source, *overrides = args.run_dir_and_overrides
    overrides += getattr(args, "trailing_overrides", [])
    result = distill_run(Path(source), Path(args.run_dir_out), overrides, args.resume)
    print(json.dumps({"run_dir": args.run_dir_out, **result}))


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="SDTT: distil a trained MDLM / PGM run into fewer sampling steps (rounds in OUT/rounds/round-N)",
    )
    p.add_argument("--run-dir", dest="run_dir_out", required=True, nargs="+", action=_RunDirThenOverrides,
                   metavar="OUT", help="the distillation run directory (overrides may follow it)")
    p.add_argument("--resume", nargs="*", action=_ResumeThenOverrides, default=False, metavar="OVERRIDES",
                   help="continue the distillation in --run-dir (overrides may follow it)")
    p.add_argument(
        "run_dir_and_overrides", nargs="+", metavar="RUN_DIR [OVERRIDES]",
        help="the trained run (teacher and student start from its EMA weights), then dotted overrides, "
        "e.g. distill.rounds=3 distill.steps_per_round=500 train.lr=6e-5",
    )
    p.set_defaults(func=cmd_distill)
