"""CLI wiring for ``partgm eval oracle RUN_OR_PROCESS``: exact quality against a known process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partgm.cliargs import nonnegative_int, positive_int, positive_ints


def cmd_eval_oracle(args: argparse.Namespace) -> None:
    from partgm.evaluation.oracle import evaluate_oracle, format_table
    from partgm.fileio import atomic_write_json

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    result = evaluate_oracle(args.target, samplers, args.steps, args.num_samples, args.batch, args.seed,
                             args.family, args.length, args.nelbo_draws, args.guidance, args.weights, args.device,
                             args.ceiling)
    print(format_table(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    else:
        print(json.dumps(result))


def add_eval_oracle_command(eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm eval oracle``."""
    e = eval_sub.add_parser(
        "oracle", help="exact quality on a synthetic corpus: excess NELBO and excess sample NLL, n-gram TV",
        description="TARGET is a run trained on data.corpus=hmm:... (or hmm-image:...), or a process .npz "
                    "(the exact denoiser itself). See docs/ground_truth.md.")
    e.add_argument("target", help="run directory, or process.npz (the exact denoiser)")
    e.add_argument("--samplers", default="auto", help="comma-separated samplers of the model's family")
    e.add_argument("--steps", type=positive_ints, default="8,32", help="comma-separated step counts")
    e.add_argument("--num-samples", type=positive_int, default=256)
    e.add_argument("--batch", type=positive_int, default=64)
    e.add_argument("--nelbo-draws", type=nonnegative_int, default=256, help="fresh draws for (a); 0: skip")
    e.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance (class-conditional)")
    e.add_argument("--family", default="partition", help="process file only: the sampler family the exact "
                   "denoiser presents itself in (partition, masked, maskgit, pgm-image)")
    e.add_argument("--length", type=positive_int, default=64, help="process file only: the row length")
    e.add_argument("--ceiling", action="store_true", help="a run: also the exact denoiser's numbers with the same "
                   "sampler and steps (the best any model can do with that sampler)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", help="output JSON (default: printed)")
    e.set_defaults(func=cmd_eval_oracle)
