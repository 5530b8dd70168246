"""The ``partgm`` command line: prepare, train, sample, eval, plot, presets, quickstart."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from partgm.benchmarks.commands import add_bench_command
from partgm.cliargs import nonnegative_int, positive_float, positive_int, unit_interval
from partgm.distill.commands import add_distill_command
from partgm.errors import PartgmError
from partgm.evaluation.commands import add_eval_commands, add_top_level_commands
from partgm.evaluation.image_commands import add_image_commands, add_image_sample_args, cmd_sample_images
from partgm.integrations.commands import add_lm_eval_command


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


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON config file")
    p.add_argument("--algo", help="a registered algorithm: mdlm | mdlm-complement | pgm | ar | ... (same as algo=...)")
    p.add_argument("--preset", help="model preset, e.g. cpu-small, mdlm-small, pgm-8-8 (same as preset=...)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.hidden_size=256 train.steps=500")


def _resolve(args: argparse.Namespace, base: dict | None = None):
    from partgm.config import resolve_config

    overrides = list(args.overrides)
    if args.algo:
        overrides.insert(0, f"algo={args.algo}")
    if args.preset:
        overrides.insert(0, f"preset={args.preset}")
    if getattr(args, "tracker", None):
        overrides.append(f"train.tracker={args.tracker}")
    return resolve_config(args.config, overrides, base)


def cmd_prepare(args: argparse.Namespace) -> None:
    from partgm.runs import prepare_data

    data = prepare_data(_resolve(args))
    h = data.header
    print(f"prepared {data.path}: vocab {h['vocab_size']}, length {h['length']}, "
          f"train rows {h['splits']['train']['rows']}, val rows {h['splits']['val']['rows']}")


def _train_config(args: argparse.Namespace):
    """``--resume`` continues from the run's own saved config (``--config`` and overrides apply on top);
    otherwise the config is built as usual and the run directory must be new, or a run that never saved."""
    from partgm.config import to_dict
    from partgm.engine.checkpoint import list_checkpoints, read_run_config

    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise PartgmError(f"run directory '{run_dir}' is a file, not a directory")
    saved = run_dir is not None and (run_dir / "config.json").is_file()
    if args.resume and not saved:
        raise PartgmError(f"cannot resume: '{args.run_dir}' is not a run directory (no config.json)")
    cfg = _resolve(args, to_dict(read_run_config(run_dir)) if args.resume else None)
    run_dir = run_dir or Path(f"runs/{cfg.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
    others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")] if run_dir.is_dir() else []
    if others and not saved:
        raise PartgmError(f"'{run_dir}' is not empty and not a run directory: pick another --run-dir")
    if not args.resume and list_checkpoints(run_dir):  # before preparing any data (the trainer checks again)
        raise PartgmError(f"run directory '{run_dir}' already holds checkpoints: pass --resume to continue it, "
                          "or pick another --run-dir")
    return cfg, run_dir


def cmd_train(args: argparse.Namespace) -> None:
    from partgm.engine import train
    from partgm.runs import prepare_data

    cfg, run_dir = _train_config(args)
    data = prepare_data(cfg, progress=cfg.train.progress)
    result = train(cfg, data, run_dir, resume=args.resume)
    print(json.dumps({"run_dir": str(run_dir), **result}))


def _sample_path(args: argparse.Namespace) -> Path:
    """``--out``, or RUN/samples/samples-stepsS-seedN[-K].jsonl with the first K that names no file yet; an
    existing ``--out`` is an error unless ``--overwrite``."""
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise PartgmError(f"--out '{out}' is a directory: give a file name, e.g. {out / 'samples.jsonl'}")
        if out.exists() and not args.overwrite:
            raise PartgmError(f"'{out}' already exists: pass --overwrite to replace it, or another --out")
        return out
    stem = Path(args.run_dir) / "samples" / f"samples-steps{args.steps}-seed{args.seed}"
    out, k = stem.with_suffix(".jsonl"), 1
    while out.exists() and not args.overwrite:
        k += 1
        out = stem.with_name(f"{stem.name}-{k}.jsonl")
    return out


def cmd_sample(args: argparse.Namespace) -> None:
    from partgm.fileio import atomic_write_text
    from partgm.images.runs import is_image_run
    from partgm.runs import sample_run
    from partgm.samplers import SamplingOptions
    from partgm.samplers.cached import sampler_choice

    if is_image_run(args.run_dir):
        return cmd_sample_images(args)
    options = SamplingOptions(steps=args.steps, nucleus=args.nucleus, temperature=args.temperature, progress=True)
    records = sample_run(
        Path(args.run_dir), options, num_samples=args.num_samples, batch=args.batch, seed=args.seed,
        sampler=sampler_choice(args.sampler, args.refresh, args.compile), prompt=args.prompt, infill=args.infill,
        weights=args.weights, device=args.device, precision=args.precision,
    )
    out = _sample_path(args)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    for r in records:
        print(f"--- sample {r['index']} ---\n{r['text']}")
    print(f"wrote {len(records)} samples to {out}")


def cmd_eval_ppl(args: argparse.Namespace) -> None:
    from partgm.api import evaluate_ppl
    from partgm.engine.checkpoint import read_data_header
    from partgm.evaluation.ppl import compare_line, compare_ppl, ppl_record_name
    from partgm.fileio import atomic_write_text

    if args.compare:
        result = compare_ppl(args.run_dir, args.compare, split=args.split, data=args.data, batch=args.batch,
                             max_batches=args.max_batches, seed=args.seed, weights=args.weights,
                             device=args.device, draws=args.draws)
        name = f"compare-{Path(args.compare).name}-{args.split}-d{args.draws}-s{args.seed}.json"
        atomic_write_text(Path(args.run_dir) / "eval" / name, json.dumps(result, indent=2))
        print(compare_line(result))
        return print(json.dumps(result))
    result = evaluate_ppl(args.run_dir, split=args.split, data=args.data, batch=args.batch,
                          max_batches=args.max_batches, seed=args.seed, weights=args.weights, device=args.device,
                          draws=args.draws)
    run_data = read_data_header(Path(args.run_dir)).get("path") or ""
    own = Path(result["data"]).resolve() == Path(run_data).resolve()
    name = ppl_record_name(result, own, args.max_batches)
    atomic_write_text(Path(args.run_dir) / "eval" / name, json.dumps(result, indent=2))
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


def cmd_plot(args: argparse.Namespace) -> None:
    from partgm.evaluation.plots import plot_genppl_vs_steps, plot_genppl_vs_throughput, read_records
    from partgm.plot import plot_run, plot_runs

    runs = [Path(r) for r in args.run_dirs]
    if not runs and not args.genppl:
        raise PartgmError("give run directories and/or --genppl JSON files to plot")
    out = Path(args.out) if args.out else (runs[0] / "plots" if len(runs) == 1 else Path("plots"))
    paths = plot_run(runs[0]) if len(runs) == 1 and not args.out else plot_runs(runs, out) if runs else []
    genppl_files = list(args.genppl) + [p for r in runs for p in sorted((r / "eval").glob("genppl-*.json"))]
    if genppl_files:
        genppl = read_records(genppl_files)
        paths.append(plot_genppl_vs_steps(genppl, out / "genppl_vs_steps.png"))
        if args.bench:
            paths.append(plot_genppl_vs_throughput(genppl, read_records(args.bench), out / "genppl_vs_throughput.png"))
    for p in paths:
        print(p)


def _presets_vocab(args: argparse.Namespace) -> tuple[int, str]:
    """(vocabulary size, where it comes from): ``--vocab-size``, else the tokenizer of ``--config`` /
    ``data.tokenizer=`` (the default config's when neither is given)."""
    import re

    from partgm.config import resolve_config
    from partgm.data import load_tokenizer

    if args.vocab_size:
        return args.vocab_size, "--vocab-size"
    spec = resolve_config(args.config, list(args.overrides)).data.tokenizer
    where = f"data.tokenizer={spec}" + (f" from {args.config}" if args.config else "")
    bpe = re.fullmatch(r"bpe-(\d+)", spec)
    if bpe:
        return int(bpe.group(1)), where
    return load_tokenizer(spec).vocab_size, where


def cmd_presets(args: argparse.Namespace) -> None:
    import dataclasses

    import torch

    from partgm.algorithms import ALGORITHMS, get_algorithm
    from partgm.config import PRESETS, ModelConfig, model_config_class, resolve_config

    vocab, where = _presets_vocab(args)
    print(f"parameters at vocabulary {vocab:,} ({where}); change with --vocab-size N or --config / "
          "data.tokenizer=...")
    shared = {f.name for f in dataclasses.fields(ModelConfig)}
    for name in PRESETS.names():
        specific = set(PRESETS.get(name)) - shared  # the family fields the preset sets
        for algo in ALGORITHMS.names():
            family = model_config_class(algo)
            if specific and not specific & {f.name for f in dataclasses.fields(family)}:
                continue  # a preset of another network family
            cfg = resolve_config(overrides=[f"preset={name}", f"algo={algo}"])
            with torch.device("meta"):
                model = get_algorithm(algo, vocab, vocab - 1).build_model(cfg.model)
            n = sum(p.numel() for p in model.parameters())
            print(f"{name:16s} {algo:16s} {family.__name__:16s} {n / 1e6:8.1f}M parameters")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from partgm.quickstart import quickstart

    quickstart(Path(args.run_dir), steps=args.steps, num_samples=args.num_samples)


def load_plugins() -> None:
    """Import the modules named in ``PARTGM_PLUGINS`` (comma-separated), which register algorithms,
    samplers, presets or corpora at import time. Installed packages can use entry points instead."""
    for name in filter(None, (n.strip() for n in os.environ.get("PARTGM_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PartgmError(f"PARTGM_PLUGINS names '{name}', which cannot be imported: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="partgm", description="Partition Generative Models and masked baselines")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="tokenize a corpus into memmap shards")
    _add_config_args(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train a model (one process, or under torchrun for DDP)")
    _add_config_args(p)
    p.add_argument("--run-dir", help="where checkpoints, metrics and plots go (default runs/ALGO-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    p.add_argument("--tracker", choices=("none", "wandb", "tensorboard"),
                   help="also log metrics.jsonl's records to Weights & Biases or TensorBoard (same as "
                   "train.tracker=...; needs partgm[wandb] / partgm[tensorboard]); default none")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate text from a run directory")
    p.add_argument("run_dir")
    p.add_argument("--steps", type=positive_int, default=128)
    p.add_argument("--num-samples", type=positive_int, default=4)
    p.add_argument("--batch", type=positive_int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nucleus", type=unit_interval, default=1.0, help="top-p; 1.0 disables")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="divides the logits; 1.0 disables")
    p.add_argument("--sampler", default="auto",
                   help="pgm: uniform | binomial | naive | cached; mdlm: ancestral | fast-ancestral; ar: ancestral")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU (the draw is always float64)")
    p.add_argument("--refresh", type=int, metavar="R",
                   help="cached sampler (approximate, opt-in): re-encode every R steps (1: exact, 0: never)")
    p.add_argument("--compile", action="store_true",
                   help="uniform / binomial: torch.compile the packed forward (bucketed clean widths)")
    p.add_argument("--prompt", help="text placed right after BOS (a prefix)")
    p.add_argument("--infill", action="append", default=[], metavar="POS:TEXT",
                   help="fix TEXT's tokens from position POS on (repeatable)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="JSONL output (default RUN_DIR/samples/samples-stepsS-seedN.jsonl, then -2, -3, "
                   "... so that no earlier file is replaced); image runs: the PNG/JSONL stem")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_image_sample_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="evaluation")
    eval_sub = p.add_subparsers(dest="eval_command", required=True)
    e = eval_sub.add_parser("ppl", help="validation perplexity (NELBO bound for MDLM/PGM, exact for AR)")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=("val", "train"), default="val")
    e.add_argument("--data", help="prepared data directory (default: the run's)")
    e.add_argument("--batch", type=positive_int, default=16)
    e.add_argument("--max-batches", type=nonnegative_int, default=0, help="0: the whole split")
    e.add_argument("--draws", type=positive_int, default=1,
                   help="times and masks per sequence: more draws, a smaller error bar (see README)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    e.add_argument("--device", default="cpu")
    e.add_argument("--compare", metavar="OTHER_RUN", help="paired comparison: score OTHER_RUN on the same "
                   "sequences with the same draws; the NELBO difference with its 95%% interval")
    e.set_defaults(func=cmd_eval_ppl)
    add_eval_commands(eval_sub)
    add_image_commands(sub, eval_sub)
    add_top_level_commands(sub)
    add_bench_command(sub)
    add_lm_eval_command(sub)
    add_distill_command(sub)

    p = sub.add_parser("plot", help="PNG plots: training curves (several runs overlaid), gen PPL and entropy "
                       "vs steps, gen PPL vs tokens/s")
    p.add_argument("run_dirs", nargs="*", help="run directories (their eval/genppl-*.json are picked up too)")
    p.add_argument("--genppl", nargs="*", default=[], help="more `partgm eval genppl` JSON files")
    p.add_argument("--bench", nargs="*", default=[], help="`partgm bench sample` JSON for gen PPL vs tokens/s")
    p.add_argument("--out", help="output folder (default RUN/plots for one run, else ./plots)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("presets", help="list model presets with parameter counts for every algorithm")
    p.add_argument("--vocab-size", type=positive_int, help="count at this vocabulary (default: the config's tokenizer)")
    p.add_argument("--config", help="YAML or JSON config file whose data.tokenizer sets the vocabulary")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.tokenizer=bpe-4096")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("quickstart", help="train a small PGM on the bundled KJV corpus and print samples")
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--steps", type=nonnegative_int, default=0, help="0: the default budget")
    p.add_argument("--num-samples", type=positive_int, default=4)
    p.set_defaults(func=cmd_quickstart)
    _add_threads_option(parser)
    return parser


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on every (leaf) subcommand: torch's CPU threads (partgm.threads; default: the free
    cores)."""
    for q in _parsers(parser):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in q._actions)
        if q is not parser and leaf and q.prefix_chars == "-" and "--threads" not in q._option_string_actions:
            q.add_argument("--threads", type=positive_int, default=argparse.SUPPRESS,
                           help="CPU threads for torch (default: the free cores, or OMP_NUM_THREADS)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads = getattr(args, "threads", None) or None  # bench's own --threads: 0 is its default
        if threads or argv is None:  # the default only for the console script itself, not in-process callers
            from partgm.threads import set_threads

            set_threads(threads)
        load_plugins()
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
