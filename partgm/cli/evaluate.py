"""``partgm eval ppl | genppl | lambada | choice`` (the image evaluations: ``partgm.cli.images``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partgm.cli.args import (
    SamplingDefaults,
    add_device,
    add_overwrite,
    add_sampling,
    add_weights,
    claim_out,
    draws,
    nonnegative_int,
    positive_int,
    seed,
)


def cmd_eval_ppl(args: argparse.Namespace) -> None:
    from partgm.api import evaluate_ppl
    from partgm.evaluation.ppl import compare_line, compare_ppl, ppl_record_name
    from partgm.fileio import atomic_write_text
    from partgm.run.checkpoint import read_data_header
    from partgm.run.layout import EVAL

    if args.compare:
        result = compare_ppl(args.run_dir, args.compare, split=args.split, data=args.data, batch=args.batch,
                             max_batches=args.max_batches, seed=args.seed, weights=args.weights,
                             device=args.device, draws=args.draws)
        name = f"compare-{Path(args.compare).name}-{args.split}-d{args.draws}-s{args.seed}.json"
        atomic_write_text(Path(args.run_dir) / EVAL / name, json.dumps(result, indent=2))
        print(compare_line(result))
        return print(json.dumps(result))
    result = evaluate_ppl(args.run_dir, split=args.split, data=args.data, batch=args.batch,
                          max_batches=args.max_batches, seed=args.seed, weights=args.weights, device=args.device,
                          draws=args.draws)
    run_data = read_data_header(Path(args.run_dir)).get("path") or ""
    own = Path(result["data"]).resolve() == Path(run_data).resolve()
    name = ppl_record_name(result, own, args.max_batches)
    atomic_write_text(Path(args.run_dir) / EVAL / name, json.dumps(result, indent=2))
    print(ppl_line(result))
    print(json.dumps(result))


def ppl_line(result: dict) -> str:
    """One human line: PPL, 95% interval, NELBO +- standard error, draws x sequences."""
    interval = "exact" if result["stderr_kind"] == "exact" else (
        f"95% interval {result['ppl_low']:.2f}-{result['ppl_high']:.2f}" if result["stderr"] is not None
        else "no error bar (one sequence, one draw)")
    stderr = result["stderr"] if result["stderr"] is not None else float("nan")
    return (f"{result['split']} PPL {result['ppl']:.2f} ({interval}; NELBO {result['nelbo']:.4f} +- {stderr:.4f} "
            f"nats/token, {result['draws']} draw(s) x {result['sequences']} sequences)")


def cmd_genppl(args: argparse.Namespace) -> None:
    from partgm.evaluation.genppl import JudgeOptions, evaluate_genppl

    claim_out(args)
    judge = JudgeOptions(max_length=args.max_length, batch=args.judge_batch, weights=args.judge_weights)
    result = evaluate_genppl(args.run_dir, args.judge, draws(args, progress=not args.quiet), weights=args.weights,
                             device=args.device, judge_options=judge, samples_file=args.samples, out=args.out)
    print(json.dumps(result))


def cmd_task(args: argparse.Namespace) -> None:
    from partgm.evaluation.zeroshot import evaluate_task

    claim_out(args)
    extra = {}
    if args.eval_command == "choice":
        extra = {
            "mc_samples": args.mc_samples,
            "score": args.score,
            "normalize": args.normalize,
            "seed": args.seed,
        }
    result = evaluate_task(
        args.eval_command,
        args.run_dir,
        args.data,
        batch=args.batch,
        weights=args.weights,
        device=args.device,
        limit=args.limit,
        truncate=args.truncate,
        out=args.out,
        **extra,
    )
    print(json.dumps(result))


def add(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds ``partgm eval ppl | genppl | lambada | choice``; returns the ``eval`` subcommands."""
    p = sub.add_parser("eval", help="evaluation")
    eval_sub = p.add_subparsers(dest="eval_command", required=True)
    e = eval_sub.add_parser("ppl", help="validation perplexity (NELBO bound for MDLM/PGM, exact for AR)")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=("val", "train"), default="val")
    e.add_argument("--data", help="prepared data directory (default: the run's)")
    e.add_argument("--batch", type=positive_int, default=16)
    e.add_argument("--max-batches", type=nonnegative_int, default=0, help="0: the whole split")
    e.add_argument("--draws", type=positive_int, default=1,
                   help="times and masks per sequence: more draws, a smaller error bar (see docs/evaluation.md)")
    e.add_argument("--seed", type=seed, default=0)
    add_weights(e)
    add_device(e)
    e.add_argument("--compare", metavar="OTHER_RUN", help="paired comparison: score OTHER_RUN on the same "
                   "sequences with the same draws; the NELBO difference with its 95%% interval")
    e.set_defaults(func=cmd_eval_ppl)

    e = eval_sub.add_parser(
        "genppl",
        help="generative perplexity of samples under a judge LM, with unigram entropy",
        description="Draw samples, retokenise them with the judge's tokenizer and report the judge's "
        "token-weighted perplexity exp(sum NLL / tokens) and the samples' mean unigram entropy.",
    )
    e.add_argument("run_dir")
    e.add_argument(
        "--judge",
        required=True,
        help="a partgm AR run directory (offline), or a transformers causal LM: a local directory or "
        "a Hub name such as gpt2-large (the paper's judge; needs partgm[hf] and network)",
    )
    add_sampling(e, SamplingDefaults(num_samples=32, batch=8, precision="fp32", precisions=("fp32", "bf16")))
    add_weights(e)
    e.add_argument("--max-length", type=positive_int, default=1024,
                   help="most tokens the judge reads per sample, its BOS included")
    e.add_argument("--judge-batch", type=positive_int, default=8)
    e.add_argument("--judge-weights", choices=("ema", "raw"), default="ema", help="for a partgm judge run")
    e.add_argument("--samples", help="score this samples JSONL (partgm sample output) instead of sampling")
    add_device(e)
    e.add_argument("--out", help="output JSON (default RUN_DIR/eval/genppl-....json)")
    add_overwrite(e, "an existing --out file")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_genppl)

    for name, text in (
        ("lambada", "LAMBADA accuracy: the whole last word predicted in one pass"),
        ("choice", "multiple-choice accuracy by (Monte-Carlo) likelihood of prefix + answer"),
    ):
        e = eval_sub.add_parser(
            name, help=text, description=text + ". Reads lm-eval-harness style JSONL; see docs/evaluation.md."
        )
        e.add_argument("run_dir")
        e.add_argument(
            "--data",
            required=True,
            help='JSONL: {"text": ...} for lambada; {"query"|"context": ..., "choices": [...], '
            '"gold": i} for choice',
        )
        e.add_argument("--batch", type=positive_int, default=8)
        e.add_argument("--limit", type=nonnegative_int, default=0, help="score only the first N examples (0: all)")
        e.add_argument(
            "--truncate",
            action="store_true",
            help="drop context tokens from the left when a sequence exceeds the model's length "
            "(default: an error)",
        )
        add_weights(e)
        add_device(e)
        e.add_argument("--out", help=f"output JSON (default RUN_DIR/eval/{name}-DATA.json)")
        add_overwrite(e, "an existing --out file")
        if name == "choice":
            e.add_argument(
                "--mc-samples",
                type=positive_int,
                default=32,
                help="Monte-Carlo draws of (t, mask) per sequence (MDLM / PGM)",
            )
            e.add_argument(
                "--score",
                choices=("joint", "answer"),
                default="joint",
                help="joint: NELBO of prefix + answer (default); answer: of the answer given the prefix",
            )
            e.add_argument(
                "--normalize",
                choices=("none", "tokens"),
                default="none",
                help="headline accuracy from raw scores or scores per scored token (both are reported)",
            )
            e.add_argument("--seed", type=seed, default=0)
        e.set_defaults(func=cmd_task)
    return eval_sub
