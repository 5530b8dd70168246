"""Issue 23, item 4: bad values for every command's numeric and path options never end in a traceback.

The options are read from ``partgm.cli.build_parser`` (so a new option is covered without a new test):

- every numeric option of every command gets each of ``BAD_NUMBERS``: argparse either refuses it (exit 2,
  one ``error:`` line) or accepts it; nothing else may escape;
- on cheap commands over a tiny random run (no training: sample, tokenize, eval ppl, eval genppl, hub
  export, plot), every accepted bad number and every path option given a missing path, a file where a
  directory is expected, a path under a file and a read-only directory runs the command: exit 0 or a one-line
  error with exit 2 (``PartgmError`` / ``OSError`` turned into ``error: ...`` by ``partgm.cli.main``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest
from tiny_runs import make_run, word_tokenizer

from partgm.cli import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")

BAD_NUMBERS = ["0", "-1", "nan", "inf", "-inf", "1e308", "", "abc", "2.5", "1,", ","]
BAD_NUMBERS += [str(random.Random(0).randint(-(2**70), 2**70))]  # fixed seed: one huge integer
# dests that name a file or a directory (positional or option)
PATHS = {"run_dir", "out", "data", "samples", "judge", "config", "directory", "folder", "run_dirs", "pgm",
         "mdlm", "ar", "ckpt", "out_run_dir", "inception_weights", "ref_stats", "target"}


def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(words, parser) of every leaf command."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from commands(sub, (*prefix, name))


def numeric(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.type not in (None, str) and a.nargs is None]


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for the required positionals and options (enough for the parser)."""
    out: list[str] = []
    for a in parser._actions:
        if a.option_strings and a.required:
            out += [a.option_strings[0], "x"]
    for a in parser._actions:
        if not a.option_strings and a.nargs not in ("*", "?") and a.dest != "help":
            out.append("x")
    return out


PARSER = build_parser()
ALL = [(words, parser) for words, parser in commands(PARSER) if parser.prefix_chars == "-"]


@pytest.mark.parametrize("words, parser", ALL, ids=[" ".join(w) for w, _ in ALL])
def test_numeric_options_parse_or_refuse(words, parser, capsys) -> None:
    for action in numeric(parser):
        for value in BAD_NUMBERS:
            argv = [*words, action.option_strings[0], value, *required_args(parser)]
            capsys.readouterr()
            try:
                PARSER.parse_args(argv)
            except SystemExit as exc:
                err = capsys.readouterr().err.strip().splitlines()
                assert exc.code == 2 and err and "error:" in err[-1], (argv, err)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    tok = word_tokenizer(root / "tok")
    make_run(root / "run", "pgm", tok)
    make_run(root / "ar", "ar", tok)
    (root / "file.txt").write_text("a file\n")
    (root / "samples.jsonl").write_text(json.dumps({"text": "the god", "token_ids": [0, 3, 5]}) + "\n")
    return {"RUN": root / "run", "AR": root / "ar", "FILE": root / "file.txt", "SAMPLES": root / "samples.jsonl",
            "ROOT": root}


# cheap commands: argv with RUN / AR / SAMPLES / OUT placeholders, where each option's bad value goes
CHEAP = [
    ["sample", "RUN", "--steps", "2", "--num-samples", "1", "--batch", "1", "--out", "OUT"],
    ["tokenize", "RUN", "the god"],
    ["eval", "ppl", "RUN", "--max-batches", "1"],
    ["eval", "genppl", "RUN", "--judge", "AR", "--samples", "SAMPLES", "--out", "OUT"],
    ["hub", "export", "RUN", "OUT"],
    ["plot", "RUN", "--out", "OUT"],
]


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def _bad_paths(world: dict[str, Path], n: int) -> list[str]:
    read_only = world["ROOT"] / f"read-only-{n}"
    read_only.mkdir(exist_ok=True)
    read_only.chmod(0o555)  # root ignores it; the other three always hold
    return [str(world["ROOT"] / f"missing-{n}"), str(world["FILE"]), str(world["FILE"] / "under"), str(read_only)]


@pytest.mark.parametrize("template", CHEAP, ids=[" ".join(t[:2]) for t in CHEAP])
def test_cheap_commands_never_trace_back(template, world, capsys) -> None:
    words = [w for w in template if w.isidentifier() or "-" in w][:2 if template[0] in ("eval", "hub") else 1]
    parser = dict(ALL)[tuple(words)]
    n = 0

    def placed(argv: list[str]) -> list[str]:
        nonlocal n
        n += 1
        return [str(world[a]) if a in world else str(world["ROOT"] / f"out-{n}") if a == "OUT" else a for a in argv]

    trials: list[list[str]] = []
    for action in numeric(parser):
        for value in BAD_NUMBERS:
            argv = placed([*template, action.option_strings[0], value])
            try:
                PARSER.parse_args(argv)
            except SystemExit:
                continue  # refused by the parser: the test above checks how
            trials.append(argv)
    positionals = [a for a in parser._actions if not a.option_strings and a.dest in PATHS]
    for action in [a for a in parser._actions if a.option_strings and a.dest in PATHS] + positionals:
        for bad in _bad_paths(world, n):
            argv = placed(template)
            if action.option_strings:
                argv = [*argv, action.option_strings[0], bad]
            else:  # the positional at its place in the template
                k = [i for i, a in enumerate(template)
                     if (a in world or a == "OUT") and not template[i - 1].startswith("--")][positionals.index(action)]
                argv[k] = bad
            trials.append(argv)
    for argv in trials:
        code, err = _run(argv, capsys)
        assert code in (0, 2), (argv, code, err)
        if code == 2:
            assert err and err[-1].startswith(("error: ", "partgm")) and "Traceback" not in "\n".join(err), (argv, err)
