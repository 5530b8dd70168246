"""``partgm plot``: training curves, gen PPL vs steps, gen PPL vs tokens/s (PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from partgm.errors import PartgmError


def cmd_plot(args: argparse.Namespace) -> None:
    from partgm.evaluation.plots import plot_genppl_vs_steps, plot_genppl_vs_throughput, read_records
    from partgm.plot import plot_run, plot_runs
    from partgm.run.layout import EVAL, PLOTS

    runs = [Path(r) for r in args.run_dirs]
    if not runs and not args.genppl:
        raise PartgmError("give run directories and/or --genppl JSON files to plot")
    out = Path(args.out) if args.out else (runs[0] / PLOTS if len(runs) == 1 else Path("plots"))
    paths = plot_run(runs[0]) if len(runs) == 1 and not args.out else plot_runs(runs, out) if runs else []
    genppl_files = list(args.genppl) + [p for r in runs for p in sorted((r / EVAL).glob("genppl-*.json"))]
    if genppl_files:
        genppl = read_records(genppl_files)
        paths.append(plot_genppl_vs_steps(genppl, out / "genppl_vs_steps.png"))
        if args.bench:
            paths.append(plot_genppl_vs_throughput(genppl, read_records(args.bench), out / "genppl_vs_throughput.png"))
    for p in paths:
        print(p)


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm plot``."""
    p = sub.add_parser("plot", help="PNG plots: training curves (several runs overlaid), gen PPL and entropy "
                       "vs steps, gen PPL vs tokens/s")
    p.add_argument("run_dirs", nargs="*", help="run directories (their eval/genppl-*.json are picked up too)")
    p.add_argument("--genppl", nargs="*", default=[], help="more `partgm eval genppl` JSON files")
    p.add_argument("--bench", nargs="*", default=[], help="`partgm bench sample` JSON for gen PPL vs tokens/s")
    p.add_argument("--out", help="output folder (default RUN/plots for one run, else ./plots)")
    p.set_defaults(func=cmd_plot)
