"""``partgm prepare | train | presets | quickstart``: data, training and the model presets."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from partgm.cli.args import add_config_args, nonnegative_int, positive_int

CORPUS_HELP = ("data.corpus is a registered corpus (kjv, openwebtext, ...), a .txt / .jsonl file or a folder "
               "of them. Each .txt file is ONE document and the train / validation split is by "
               "document (data.val_fraction of the documents, at least one, go to validation): a folder of "
               "20 .txt files leaves one for validation. Put one document per line in a .jsonl "
               '({"text": ...}) for a finer split.')


def _resolve(args: argparse.Namespace, base: dict | None = None):
    """The run config of ``--config``, ``--preset``, ``--algo``, ``--tracker``, ``--steps`` and overrides."""
    from partgm.resolve import resolve_config
    from partgm.run.budget import scaled_budget

    overrides = list(args.overrides)
    if args.algo:
        overrides.insert(0, f"algo={args.algo}")
    if args.preset:
        overrides.insert(0, f"preset={args.preset}")
    if getattr(args, "tracker", None):
        overrides.append(f"train.tracker={args.tracker}")
    cfg = resolve_config(args.config, overrides, base)
    if getattr(args, "steps", None):
        named = {o.split("=", 1)[0].strip() for o in overrides}
        scaled = scaled_budget(cfg.train, args.steps)
        overrides += [f"train.{k}={v}" for k, v in scaled.items() if k == "steps" or f"train.{k}" not in named]
        cfg = resolve_config(args.config, overrides, base)
    return cfg


def cmd_prepare(args: argparse.Namespace) -> None:
    from partgm.runs import prepare_data

    _, data = prepare_data(_resolve(args))
    h = data.header
    print(f"prepared {data.path}: vocab {h['vocab_size']}, length {h['length']}, "
          f"train rows {h['splits']['train']['rows']}, val rows {h['splits']['val']['rows']}")


def _train_config(args: argparse.Namespace):
    """``--resume`` continues from the run's own saved config (``--config`` and overrides apply on top);
    otherwise the config is built as usual and the run directory must be new, or a run that never saved
    (``partgm.run.layout.check_fresh_or_resume``)."""
    from partgm.config import to_dict
    from partgm.run.checkpoint import read_run_config
    from partgm.run.layout import check_fresh_or_resume

    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None:
        check_fresh_or_resume(run_dir, args.resume)
    cfg = _resolve(args, to_dict(read_run_config(run_dir)) if args.resume else None)
    if run_dir is None:
        run_dir = Path(f"runs/{cfg.algo}-{time.strftime('%Y%m%d-%H%M%S')}")
        check_fresh_or_resume(run_dir, args.resume)
    return cfg, run_dir


def cmd_train(args: argparse.Namespace) -> None:
    from partgm.engine import train
    from partgm.runs import prepare_data

    cfg, run_dir = _train_config(args)
    cfg, data = prepare_data(cfg, progress=cfg.train.progress)
    result = train(cfg, data, run_dir, resume=args.resume)
    print(json.dumps({"run_dir": str(run_dir), **result}))


def _presets_vocab(args: argparse.Namespace) -> tuple[int, str]:
    """(vocabulary size, where it comes from): ``--vocab-size``, else the tokenizer of ``--config`` /
    ``data.tokenizer=`` (the default config's when neither is given)."""
    import re

    from partgm.data import load_tokenizer
    from partgm.resolve import resolve_config

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
    from partgm.models.config import ModelConfig
    from partgm.resolve import PRESETS, model_config_class, resolve_config

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
                model = get_algorithm(algo, vocab, vocab - 1, length=cfg.data.length).build_model(cfg.model)
            n = sum(p.numel() for p in model.parameters())
            print(f"{name:16s} {algo:16s} {family.__name__:16s} {n / 1e6:8.1f}M parameters")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from partgm.quickstart import quickstart

    quickstart(Path(args.run_dir), steps=args.steps, num_samples=args.num_samples)


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm prepare``, ``train`` and ``presets``."""
    p = sub.add_parser("prepare", help="tokenize a corpus into memmap shards", description=(
        "Tokenize data.corpus with data.tokenizer into shards of data.length tokens. " + CORPUS_HELP))
    add_config_args(p)
    p.set_defaults(func=cmd_prepare, steps=None)

    p = sub.add_parser("train", help="train a model (one process, or under torchrun for DDP)", description=(
        "Train on data.corpus (prepared first when needed). " + CORPUS_HELP))
    add_config_args(p)
    p.add_argument("--run-dir", help="where checkpoints, metrics and plots go (default runs/ALGO-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    p.add_argument("--steps", type=positive_int, metavar="N", help=(
        "train for N steps and scale train.warmup_steps, train.eval_every and train.save_every by "
        "N / train.steps (rounded, intervals at least 1); an explicit train.X=... override wins"))
    p.add_argument("--tracker", choices=("none", "wandb", "tensorboard"),
                   help="also log metrics.jsonl's records to Weights & Biases or TensorBoard (same as "
                   "train.tracker=...; needs partgm[wandb] / partgm[tensorboard]); default none")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("presets", help="list model presets with parameter counts for every algorithm")
    p.add_argument("--vocab-size", type=positive_int, help="count at this vocabulary (default: the config's tokenizer)")
    p.add_argument("--config", help="YAML or JSON config file whose data.tokenizer sets the vocabulary")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.tokenizer=bpe-4096")
    p.set_defaults(func=cmd_presets)


def add_quickstart(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm quickstart``."""
    p = sub.add_parser("quickstart", help="train a small PGM on the bundled KJV corpus and print samples")
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--steps", type=nonnegative_int, default=0, help=(
        "training steps (0: the recipe's); warmup, evaluation and saving intervals scale with them, as in "
        "`partgm train --steps N`"))
    p.add_argument("--num-samples", type=positive_int, default=4)
    p.set_defaults(func=cmd_quickstart)
