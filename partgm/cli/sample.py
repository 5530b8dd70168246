"""``partgm sample`` (text and image runs) and ``partgm tokenize`` (where a prompt's tokens land)."""

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
    draws,
    nonnegative_int,
)
from partgm.errors import PartgmError


def _sample_path(args: argparse.Namespace) -> Path:
    """``--out``, or RUN/samples/samples-stepsS-seedN[-K].jsonl with the first K that names no file yet; an
    existing ``--out`` is an error unless ``--overwrite``."""
    from partgm.fileio import claim_output, free_stem
    from partgm.run.layout import SAMPLES

    if args.out:
        out = Path(args.out)
        return claim_output(out, args.overwrite, "--out")
    stem = Path(args.run_dir) / SAMPLES / f"samples-steps{args.steps}-seed{args.seed}"
    stem = stem if args.overwrite else free_stem(stem, (".jsonl",))
    return stem.with_name(stem.name + ".jsonl")


def _check_flags(args: argparse.Namespace, image: bool) -> None:
    """Refuse the flags that do not apply to the run's kind (text or image), a repeated ``--class`` and an
    ``--out`` that names a directory."""
    if image and (args.prompt is not None or args.infill):
        raise PartgmError(f"{'--prompt' if args.prompt is not None else '--infill'} applies to text runs; "
                          f"'{args.run_dir}' is an image run (choose its classes with --class)")
    if not image and args.guidance:
        raise PartgmError("--guidance applies to class-conditional image runs, not to text runs")
    if not image and args.classes:
        raise PartgmError("--class applies to class-conditional image runs, not to text runs")
    twice = sorted({c for c in args.classes or [] if args.classes.count(c) > 1})
    if twice:
        raise PartgmError(f"--class {twice[0]} is given twice: name each class once (--num-samples sets how many)")
    if args.out and Path(args.out).is_dir():
        raise PartgmError(f"--out '{args.out}' is a directory: give a file name, e.g. {Path(args.out) / 'samples'}")


def cmd_sample(args: argparse.Namespace) -> None:
    from partgm.cli.images import cmd_sample_images
    from partgm.fileio import atomic_write_text
    from partgm.run.images import is_image_run
    from partgm.run.sampling import sample_run

    d = draws(args, progress=True)
    image = is_image_run(args.run_dir)
    _check_flags(args, image)
    if image:
        return cmd_sample_images(args, d)
    out = _sample_path(args)
    records = sample_run(Path(args.run_dir), d, prompt=args.prompt, infill=args.infill, weights=args.weights,
                         device=args.device, at_eos=args.at_eos)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    for r in records:
        print(f"--- sample {r['index']} ---\n{r['text']}")
    print(f"wrote {len(records)} samples to {out}")


def cmd_tokenize(args: argparse.Namespace) -> None:
    from partgm.run.sampling import prompt_positions

    rows = prompt_positions(Path(args.run_dir), args.text, at=args.at)
    for position, token, piece in rows:
        print(f"{position:6d} {token:7d}  {json.dumps(piece)}")
    first, last = rows[0][0], rows[-1][0]
    print(f"{len(rows)} tokens at positions {first}..{last}" + (
        "" if args.at is not None else " as --prompt (position 0 holds BOS); for --infill POS:TEXT pass --at POS"))


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm sample`` and ``partgm tokenize``."""
    p = sub.add_parser("sample", help="generate text (or images) from a run directory")
    p.add_argument("run_dir")
    add_sampling(p, SamplingDefaults(guidance=True))
    p.add_argument("--refresh", type=nonnegative_int, metavar="R",
                   help="cached (PGM) / dual-cache (MDLM) samplers (approximate, opt-in): recompute every position "
                   "every R steps (1: exact, 0: never); alone it picks cached")
    p.add_argument("--compile", action="store_true",
                   help="uniform / binomial: torch.compile the packed forward (bucketed clean widths)")
    p.add_argument("--prompt", help="text placed right after BOS (a prefix)")
    p.add_argument("--infill", action="append", default=[], metavar="POS:TEXT",
                   help="fix TEXT's tokens from position POS on (repeatable; `partgm tokenize RUN TEXT --at POS` "
                   "shows the positions they take)")
    p.add_argument("--at-eos", choices=("keep", "stop", "strip"), default="keep",
                   help="the text after an end-of-text token: keep it (default; <|endoftext|> separates "
                   "documents), stop the text at the first one, or strip the tokens; token_ids stay whole")
    add_weights(p)
    add_device(p)
    p.add_argument("--out", help="JSONL output (default RUN_DIR/samples/samples-stepsS-seedN.jsonl, then -2, -3, "
                   "... so that no earlier file is replaced); image runs: the PNG/JSONL stem")
    add_overwrite(p, "an existing output file")
    p.add_argument("--class", dest="classes", type=int, action="append", metavar="ID",
                   help="image runs: a class to sample, one grid row each (repeatable; default all)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("tokenize", help="the tokens a text takes in a run's tokenizer, with their positions",
                       description="Print position, id and text of each token of TEXT: as a --prompt (after "
                       "BOS), or with --at POS as the text of --infill POS:TEXT.")
    p.add_argument("run_dir")
    p.add_argument("text")
    p.add_argument("--at", type=int, metavar="POS", help="the first position (as in --infill POS:TEXT)")
    p.set_defaults(func=cmd_tokenize)
