"""CLI wiring for evaluation and interoperability commands.

``partgm eval genppl | lambada | choice``, ``partgm convert`` and ``partgm hub push | pull | export |
import``. Heavy imports happen inside the command functions, so ``partgm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json

from partgm.cliargs import nonnegative_int, positive_int, unit_interval


def cmd_genppl(args: argparse.Namespace) -> None:
    from partgm.evaluation.genppl import evaluate_genppl

    result = evaluate_genppl(
        args.run_dir,
        args.judge,
        num_samples=args.num_samples,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        nucleus=args.nucleus,
        sampler=args.sampler,
        weights=args.weights,
        device=args.device,
        precision=args.precision,
        max_length=args.max_length,
        judge_batch=args.judge_batch,
        judge_weights=args.judge_weights,
        samples_file=args.samples,
        out=args.out,
        progress=not args.quiet,
    )
    print(json.dumps(result))


def cmd_task(args: argparse.Namespace) -> None:
    from partgm.evaluation.zeroshot import evaluate_task

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


def add_eval_commands(eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm eval genppl | lambada | choice | oracle``."""
    from partgm.evaluation.oracle_commands import add_eval_oracle_command

    add_eval_oracle_command(eval_sub)
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
    e.add_argument("--num-samples", type=positive_int, default=32, help="paper: 1024")
    e.add_argument("--steps", type=positive_int, default=128)
    e.add_argument("--batch", type=positive_int, default=8)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--nucleus", type=unit_interval, default=1.0, help="top-p; 1.0 disables")
    e.add_argument("--sampler", default="auto", help="pgm: uniform | binomial | naive; mdlm/ar: ancestral")
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    e.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="autocast while sampling (the judge always runs fp32 with float64 log-softmax)",
    )
    e.add_argument(
        "--max-length",
        type=positive_int,
        default=1024,
        help="most tokens the judge reads per sample, its BOS included",
    )
    e.add_argument("--judge-batch", type=positive_int, default=8)
    e.add_argument("--judge-weights", choices=("ema", "raw"), default="ema", help="for a partgm judge run")
    e.add_argument("--samples", help="score this samples JSONL (partgm sample output) instead of sampling")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", help="output JSON (default RUN_DIR/eval/genppl-....json)")
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
        e.add_argument("--weights", choices=("ema", "raw"), default="ema")
        e.add_argument("--device", default="cpu")
        e.add_argument("--out", help=f"output JSON (default RUN_DIR/eval/{name}-DATA.json)")
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
            e.add_argument("--seed", type=int, default=0)
        e.set_defaults(func=cmd_task)


def cmd_convert(args: argparse.Namespace) -> None:
    from partgm.convert import convert_checkpoint

    summary = convert_checkpoint(
        args.ckpt,
        args.out_run_dir,
        args.algo,
        allow_pickle=args.allow_pickle,
        weights=args.weights,
        length=args.length,
        n_heads=args.n_heads,
        tokenizer=args.tokenizer,
        vocab_size=args.vocab_size,
        bos_id=args.bos_id,
        swap_query_mode=args.swap_query_mode,
    )
    print(json.dumps(summary))


def cmd_hub(args: argparse.Namespace) -> None:
    from partgm import pretrained

    if args.hub_command == "push":
        print(
            pretrained.push_to_hub(
                args.run_dir, args.repo_id, weights=args.weights, private=args.private, revision=args.revision
            )
        )
    elif args.hub_command == "pull":
        print(pretrained.pull_from_hub(args.repo_id, args.run_dir, revision=args.revision))
    elif args.hub_command == "export":
        print(pretrained.save_pretrained(args.run_dir, args.directory, weights=args.weights))
    else:
        print(pretrained.import_pretrained(args.directory, args.run_dir))


def add_top_level_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm convert`` and ``partgm hub``."""
    p = sub.add_parser(
        "convert",
        help="import a reference PGM / MDLM Lightning checkpoint into a run directory",
        description="Convert the authors' released text checkpoints (.ckpt) into a partgm run directory. "
        "A .ckpt is a pickle: loading it can run code, so --allow-pickle is required.",
    )
    p.add_argument("ckpt", help="Lightning .ckpt (or a .safetensors of backbone tensors)")
    p.add_argument("out_run_dir")
    p.add_argument("--algo", choices=("pgm", "mdlm"), required=True)
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow unpickling the checkpoint (only for files from a source you trust)",
    )
    p.add_argument(
        "--weights",
        choices=("ema", "raw"),
        default="ema",
        help="ema: the EMA weights are the run's evaluated weights (default); raw: the raw weights",
    )
    p.add_argument(
        "--length", type=positive_int, help="sequence length (default: from the checkpoint, else 1024)"
    )
    p.add_argument("--n-heads", type=positive_int, help="attention heads when the checkpoint does not say")
    p.add_argument("--tokenizer", default="gpt2", help="tokenizer copied into the run: gpt2, a path, or none")
    p.add_argument(
        "--vocab-size", type=positive_int, help="real tokens N (default: embedding rows - 1, the [MASK])"
    )
    p.add_argument("--bos-id", type=int, help="BOS id (default: the tokenizer's, else N - 1)")
    p.add_argument(
        "--swap-query-mode",
        choices=("learn", "learn+freqs", "learn+freqs+mean", "learn+freqs+logsumexp"),
        help="PGM GroupSwap query mode when the checkpoint does not say (default learn+freqs)",
    )
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("hub", help="share models: Hugging Face Hub push / pull, local export / import")
    hub = p.add_subparsers(dest="hub_command", required=True)
    h = hub.add_parser(
        "push", help="upload a run (model.safetensors, config.json, tokenizer.json) to the Hub"
    )
    h.add_argument("run_dir")
    h.add_argument("repo_id")
    h.add_argument("--weights", choices=("ema", "raw"), default="ema")
    h.add_argument("--private", action="store_true")
    h.add_argument("--revision", help="branch to push to")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("pull", help="download a Hub repository into a new run directory")
    h.add_argument("repo_id")
    h.add_argument("run_dir")
    h.add_argument("--revision")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("export", help="write a run as a pretrained directory (offline)")
    h.add_argument("run_dir")
    h.add_argument("directory")
    h.add_argument("--weights", choices=("ema", "raw"), default="ema")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("import", help="turn a pretrained directory into a run directory (offline)")
    h.add_argument("directory")
    h.add_argument("run_dir")
    h.set_defaults(func=cmd_hub)
