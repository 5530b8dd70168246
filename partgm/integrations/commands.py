"""``partgm lm-eval ARGS``: lm-eval's own command line with the ``partgm`` model registered."""

from __future__ import annotations

import argparse

from partgm.errors import PartgmError


def cmd_lm_eval(args: argparse.Namespace) -> None:
    import sys
    from importlib.util import find_spec

    from partgm.integrations.offline import go_offline_if_unreachable

    installed = "lm_eval" in sys.modules or find_spec("lm_eval") is not None
    if installed and not {"-h", "--help"} & set(args.lm_eval_args):
        go_offline_if_unreachable()  # before lm-eval imports `datasets`, which reads the offline flags once
    try:
        from partgm.integrations.lm_eval import main
    except ImportError as exc:
        raise PartgmError(str(exc)) from None
    main(args.lm_eval_args)


def add_lm_eval_command(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm lm-eval``; every argument goes to lm-eval unchanged (``partgm lm-eval --help``)."""
    p = sub.add_parser(
        "lm-eval",
        help="EleutherAI lm-evaluation-harness with the partgm model: partgm lm-eval --model partgm "
        "--model_args run=RUN_DIR --tasks ... (needs partgm[lm-eval])",
        add_help=False,
        prefix_chars="+",  # so that every --option reaches lm-eval
    )
    p.add_argument("lm_eval_args", nargs="*")
    p.set_defaults(func=cmd_lm_eval)
