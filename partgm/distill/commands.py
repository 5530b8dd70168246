"""``partgm distill RUN_DIR --run-dir OUT [overrides]``: SDTT rounds from a trained MDLM / PGM run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError


def distill_config(source: Path, out: Path, overrides: list[str], resume: bool) -> Any:
    """The distillation run's config: the source run's (or, on resume, OUT's) with ``overrides``;
    ``train.init_from`` is the source and ``train.steps`` covers ``distill.rounds`` rounds."""
    from partgm.config import resolve_config, to_dict
    from partgm.engine.checkpoint import read_run_config

    base = to_dict(read_run_config(out if resume else source))
    cfg = resolve_config(None, overrides, base)
    if cfg.algo != base["algo"]:
        raise PartgmError(f"a distilled run keeps its teacher's algorithm '{base['algo']}', not '{cfg.algo}'")
    cfg.train.init_from = str(source)
    cfg.train.init_weights = cfg.distill.start_weights
    cfg.train.steps = cfg.distill.rounds * cfg.distill.steps_per_round
    return cfg


def distill_run(source: Path, out: Path, overrides: list[str] | None = None, resume: bool = False) -> dict:
    """Distil the run ``source`` into ``out`` (resume: continue ``out``). Returns the final metrics.
    Each round's student is written to ``out/rounds/round-N`` as a plain run directory."""
    from partgm.algorithms import TokenSpace, build_algorithm
    from partgm.data import PreparedData
    from partgm.distill.algorithm import SDTTAlgorithm
    from partgm.engine import train
    from partgm.engine.checkpoint import load_run, read_data_header
    from partgm.runs import prepare_data

    if out.exists() and any(out.iterdir()) and not resume:
        raise PartgmError(f"run directory '{out}' is not empty: pass --resume to continue it, or another --run-dir")
    if resume and not (out / "config.json").is_file():
        raise PartgmError(f"cannot resume '{out}': it holds no distillation run")
    cfg = distill_config(source, out, list(overrides or []), resume)
    header = read_data_header(out if resume else source)
    data_path = header.get("path")
    data = PreparedData.load(data_path) if data_path and Path(data_path).is_dir() else prepare_data(cfg)
    base = build_algorithm(cfg, TokenSpace.from_header({**data.header, "path": None}))
    if base.sampler_family not in ("masked", "partition"):
        raise PartgmError(f"SDTT distils masked and partition models, not '{cfg.algo}'")
    # On resume the teacher's weights come from the checkpoint; a fresh network is enough here.
    teacher = base.build_model(cfg.model) if resume else load_run(source, weights=cfg.distill.start_weights).model
    return train(cfg, data, out, resume=resume, algorithm=SDTTAlgorithm(base, cfg.distill, teacher))


class _RunDirThenOverrides(argparse.Action):
    """``--run-dir OUT [OVERRIDES...]``: argparse leaves positionals that follow an option unmatched once
    RUN_DIR is taken, so the overrides written after ``--run-dir OUT`` are collected here."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        namespace.run_dir_out, namespace.trailing_overrides = values[0], list(values[1:])


def cmd_distill(args: argparse.Namespace) -> None:
    source, *overrides = args.run_dir_and_overrides
    overrides += getattr(args, "trailing_overrides", [])
    result = distill_run(Path(source), Path(args.run_dir_out), overrides, args.resume)
    print(json.dumps({"run_dir": args.run_dir_out, **result}))


def add_distill_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="SDTT: distil a trained MDLM / PGM run into fewer sampling steps (rounds in OUT/rounds/round-N)",
    )
    p.add_argument("--run-dir", dest="run_dir_out", required=True, nargs="+", action=_RunDirThenOverrides,
                   metavar="OUT", help="the distillation run directory (overrides may follow it)")
    p.add_argument("--resume", action="store_true", help="continue the distillation in --run-dir")
    p.add_argument(
        "run_dir_and_overrides", nargs="+", metavar="RUN_DIR [OVERRIDES]",
        help="the trained run (teacher and student start from its EMA weights), then dotted overrides, "
        "e.g. distill.rounds=3 distill.steps_per_round=500 train.lr=6e-5",
    )
    p.set_defaults(func=cmd_distill)
