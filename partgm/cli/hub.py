"""``partgm convert`` (reference checkpoints -> a run) and ``partgm hub push | pull | export | import``."""

from __future__ import annotations

import argparse
import json

from partgm.cli.args import add_overwrite, add_weights, positive_int


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
        overwrite=args.overwrite,
    )
    print(json.dumps(summary))


def cmd_hub(args: argparse.Namespace) -> None:
    from partgm.fileio import claim_output
    from partgm.run import pretrained

    if args.hub_command == "export":
        claim_output(args.directory, args.overwrite, "pretrained directory")
    if args.hub_command == "push":
        print(pretrained.push_to_hub(args.run_dir, args.repo_id, weights=args.weights, private=args.private,
                              revision=args.revision))
    elif args.hub_command == "pull":
        print(pretrained.pull_from_hub(args.repo_id, args.run_dir, revision=args.revision,
                                       overwrite=args.overwrite))
    elif args.hub_command == "export":
        print(pretrained.save_pretrained(args.run_dir, args.directory, weights=args.weights))
    else:
        print(pretrained.import_pretrained(args.directory, args.run_dir, overwrite=args.overwrite))


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm convert`` and ``partgm hub``."""
    p = sub.add_parser(
        "convert",
        help="import a reference PGM / MDLM Lightning checkpoint into a run directory",
        description="Convert the authors' released text checkpoints (.ckpt) into a partgm run directory. "
        "A .ckpt is a pickle: loading it can run code, so --allow-pickle is required.",
    )
    p.add_argument("ckpt", help="Lightning .ckpt (or a .safetensors of backbone tensors)")
    p.add_argument("out_run_dir")
    p.add_argument("--algo", choices=("pgm", "mdlm", "pgm-image", "maskgit"), required=True,
                   help="pgm / mdlm: text .ckpt; pgm-image / maskgit: the image format {iter, model_state_dict, ...}")
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
    add_overwrite(p, "an existing output directory")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("hub", help="share models: Hugging Face Hub push / pull, local export / import")
    hub = p.add_subparsers(dest="hub_command", required=True)
    h = hub.add_parser(
        "push", help="upload a run (model.safetensors, config.json, tokenizer.json) to the Hub"
    )
    h.add_argument("run_dir")
    h.add_argument("repo_id")
    add_weights(h)
    h.add_argument("--private", action="store_true")
    h.add_argument("--revision", help="branch to push to")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("pull", help="download a Hub repository into a new run directory")
    h.add_argument("repo_id")
    h.add_argument("run_dir")
    h.add_argument("--revision")
    add_overwrite(h, "an existing directory")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("export", help="write a run as a pretrained directory (offline)")
    h.add_argument("run_dir")
    h.add_argument("directory")
    add_weights(h)
    add_overwrite(h, "an existing pretrained directory")
    h.set_defaults(func=cmd_hub)
    h = hub.add_parser("import", help="turn a pretrained directory into a run directory (offline)")
    h.add_argument("directory")
    h.add_argument("run_dir")
    add_overwrite(h, "an existing directory")
    h.set_defaults(func=cmd_hub)
