"""Issue 11, part 3: every bad input gets a one-line error, through the command line and the Python API.

``BAD_INPUTS`` is the table of docs/errors.md: regenerate it with
``PYTHONPATH=.:tests python tests/cli/test_bad_inputs.py`` after changing a message.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_corpus
from PIL import Image
from tiny_runs import make_run, word_tokenizer

from partgm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

NOT_UTF8 = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of Latin-1 bytes in argv

IMAGE_TINY = ["model.hidden_size=32", "model.n_heads=2", "model.cond_dim=32", "model.dropout=0.0", "train.steps=2",
              "train.global_batch=8", "train.eval_every=2", "train.eval_batches=1", "train.save_every=2",
              "train.progress=false", "data.corpus=digits", "data.val_fraction=0.1", "model.n_encoder_blocks=1",
              "model.n_decoder_blocks=1"]

# (what was tried, argv with RUN / CORPUS / CACHE / FILE / OTHER_DATA placeholders, expected text in the error)
BAD_INPUTS: list[tuple[str, list[str], str]] = [
    ("zero attention heads", ["train", "model.n_heads=0"], "model.n_heads=0 must be >= 1"),
    ("zero hidden size", ["train", "model.hidden_size=0"], "model.hidden_size=0 must be >= 1"),
    ("negative encoder depth", ["train", "model.n_encoder_blocks=-1"], "model.n_encoder_blocks=-1 must be >= 1"),
    ("dropout 2", ["train", "model.dropout=2"], "model.dropout=2.0 must be in [0.0, 1.0)"),
    ("negative learning rate", ["train", "train.lr=-1"], "train.lr=-1.0 must be a positive number"),
    ("NaN learning rate", ["train", "train.lr=nan"], "train.lr=nan must be a positive number"),
    ("EMA decay 2", ["train", "train.ema_decay=2"], "train.ema_decay=2.0 must be in [0.0, 1.0)"),
    ("keep_last -1", ["train", "train.keep_last=-1"], "train.keep_last=-1 must be >= 0"),
    ("save_every -3", ["train", "train.save_every=-3"], "train.save_every=-3 must be >= 0"),
    ("eval_draws 0", ["train", "train.eval_draws=0"], "train.eval_draws=0 must be >= 1"),
    ("unknown noise schedule", ["train", "train.noise_schedule=cosin"], "did you mean 'cosine'"),
    ("run directory is a file", ["train", "--run-dir", "FILE"], "is a file, not a directory"),
    ("--resume on a directory that is not a run", ["train", "--run-dir", "CACHE", "--resume"],
     "is not a run directory"),
    ("sample --batch 0", ["sample", "RUN", "--batch", "0"], "must be a positive integer, got 0"),
    ("sample --batch -1", ["sample", "RUN", "--batch", "-1"], "must be a positive integer, got -1"),
    ("sample --num-samples -2", ["sample", "RUN", "--num-samples", "-2"], "must be a positive integer, got -2"),
    ("sample --steps 2.5", ["sample", "RUN", "--steps", "2.5"], "expected an integer, got '2.5'"),
    ("sample --nucleus 0", ["sample", "RUN", "--nucleus", "0"], "must be in (0, 1], got 0"),
    ("sample --out DIR", ["sample", "RUN", "--steps", "2", "--out", "CACHE"], "is a directory: give a file name"),
    ("non-UTF-8 --prompt", ["sample", "RUN", "--steps", "2", "--prompt", NOT_UTF8], "--prompt is not valid UTF-8"),
    ("non-UTF-8 --infill", ["sample", "RUN", "--steps", "2", "--infill", "5:" + NOT_UTF8], "is not valid UTF-8"),
    ("overlapping --infill spans", ["sample", "RUN", "--steps", "2", "--infill", "5:the lord god",
                                    "--infill", "6:moses"], "overlaps '5:the lord god' at position 6"),
    ("the same --infill position twice", ["sample", "RUN", "--steps", "2", "--infill", "5:the",
                                          "--infill", "5:god"], "overlaps '5:the' at position 5"),
    ("--infill '5:' (no text)", ["sample", "RUN", "--steps", "2", "--infill", "5:"], "has no text after the colon"),
    ("sample --guidance on a text run", ["sample", "RUN", "--steps", "2", "--guidance", "2"],
     "--guidance applies to class-conditional image runs"),
    ("sample --at-eos cut", ["sample", "RUN", "--at-eos", "cut"], "invalid choice: 'cut'"),
    ("tokenize a text of no tokens", ["tokenize", "RUN", ""], "the text has no tokens"),
    ("train --steps 0", ["train", "--steps", "0"], "must be a positive integer, got 0"),
    ("eval ppl --batch 0", ["eval", "ppl", "RUN", "--batch", "0"], "must be a positive integer, got 0"),
    ("eval ppl --batch -4", ["eval", "ppl", "RUN", "--batch", "-4"], "must be a positive integer, got -4"),
    ("eval ppl --max-batches -1", ["eval", "ppl", "RUN", "--max-batches", "-1"], "must be >= 0, got -1"),
    ("eval ppl --draws 0", ["eval", "ppl", "RUN", "--draws", "0"], "must be a positive integer, got 0"),
    ("eval ppl --data of another sequence length", ["eval", "ppl", "RUN", "--data", "OTHER_DATA"],
     "has sequences of length 16, the model was trained on 32"),
    ("eval lambada --limit -3", ["eval", "lambada", "RUN", "--data", "FILE", "--limit", "-3"], "must be >= 0, got -3"),
    ("presets --vocab-size -5", ["presets", "--vocab-size", "-5"], "must be a positive integer, got -5"),
    ("presets --vocab-size 0", ["presets", "--vocab-size", "0"], "must be a positive integer, got 0"),
    ("bench --repeats 0", ["bench", "sample", "--repeats", "0"], "must be a positive integer, got 0"),
    ("bench --batch -1", ["bench", "sample", "--batch", "-1"], "must be a positive integer, got -1"),
    ("bench --steps a,b", ["bench", "sample", "--steps", "a,b"], "expected an integer, got 'a'"),
    ("hub import with bos_id outside the vocabulary", ["hub", "import", "EXPORT", "OUT"],
     "bos_id 100000 is not a token id of vocab_size"),
    # Issue 23, item 2: tracebacks that are now one line
    ("hub export of an image run", ["hub", "export", "IMG", "OUT"], "is an image run: a pretrained directory"),
    ("vq train --size not a multiple of --downsample", ["vq", "train", "FOLDER", "--out", "OUT", "--size", "18"],
     "--size 18 is not a multiple of --downsample 4"),
    ("vq train --lr nan", ["vq", "train", "FOLDER", "--out", "OUT", "--lr", "nan"], "must be a positive number"),
    ("vq train --lr 0", ["vq", "train", "FOLDER", "--out", "OUT", "--lr", "0"], "must be a positive number"),
    ("vq train --codebook-size 0", ["vq", "train", "FOLDER", "--out", "OUT", "--codebook-size", "0"],
     "must be a positive integer, got 0"),
    ("vq train --hidden -1", ["vq", "train", "FOLDER", "--out", "OUT", "--hidden", "-1"],
     "must be a positive integer, got -1"),
    ("bench images --steps 2.5", ["bench", "images", "--steps", "2.5"], "expected an integer, got '2.5'"),
    ("bench images --steps ''", ["bench", "images", "--steps", ""], "expected comma-separated positive integers"),
    ("bench images --guidance abc", ["bench", "images", "--guidance", "abc"], "expected a number, got 'abc'"),
    ("bench images --guidance inf", ["bench", "images", "--guidance", "inf"], "must be a number >= 0, got inf"),
    ("bench images --batch 0", ["bench", "images", "--batch", "0"], "must be a positive integer, got 0"),
    ("bench images --repeats 0", ["bench", "images", "--repeats", "0"], "must be a positive integer, got 0"),
    ("bench frontier --refresh abc", ["bench", "frontier", "--pgm", "RUN", "--refresh", "abc"],
     "expected an integer, got 'abc'"),
    ("bench frontier --steps 2.5", ["bench", "frontier", "--pgm", "RUN", "--steps", "2.5"],
     "expected an integer, got '2.5'"),
    ("bench frontier --repeats 0", ["bench", "frontier", "--pgm", "RUN", "--repeats", "0"],
     "must be a positive integer, got 0"),
    ("lm-eval --model partgm without --model_args", ["lm-eval", "--model", "partgm", "--tasks", "lambada_openai"],
     "--model partgm needs --model_args run=RUN_DIR"),
    ("train with a model too big for memory", ["train", "model.hidden_size=400000", "model.n_heads=1"],
     "training needs about"),
    # silently accepted, now refused
    ("sample --prompt on an image run", ["sample", "IMG", "--steps", "2", "--prompt", "the"],
     "--prompt applies to text runs"),
    ("sample --infill on an image run", ["sample", "IMG", "--steps", "2", "--infill", "3:the"],
     "--infill applies to text runs"),
    ("sample --class on a text run", ["sample", "RUN", "--steps", "2", "--class", "3"],
     "--class applies to class-conditional image runs"),
    ("sample the same --class twice", ["sample", "IMG", "--steps", "2", "--class", "3", "--class", "3"],
     "--class 3 is given twice"),
    ("sample --temperature 1e-300", ["sample", "RUN", "--steps", "2", "--temperature", "1e-300"],
     "temperature must be a finite number >= 0.001"),
    ("sample --guidance inf", ["sample", "IMG", "--steps", "2", "--guidance", "inf"], "must be a number >= 0"),
    ("sample --guidance nan", ["sample", "IMG", "--steps", "2", "--guidance", "nan"], "must be a number >= 0"),
    ("sample --out DIR on an image run", ["sample", "IMG", "--steps", "2", "--out", "CACHE"],
     "is a directory: give a file name"),
    ("distill a distillation run", ["distill", "DISTILLED", "--run-dir", "OUT"], "is a distillation run"),
    ("distill with data.* overrides", ["distill", "RUN", "--run-dir", "OUT", "data.corpus=digits"],
     "data.* cannot be overridden"),
    ("distill.initial_dt=1", ["distill", "RUN", "--run-dir", "OUT", "distill.initial_dt=1"],
     "gives the last student a step of 128 > 1"),
    ("eval genppl --samples with ids outside the vocabulary", ["eval", "genppl", "RUN", "--judge", "AR",
                                                             "--samples", "BAD_SAMPLES"],
     "token id 9999 is not one of the run's ids"),
    ("eval genppl on an image run", ["eval", "genppl", "IMG", "--judge", "AR", "--samples", "SAMPLES"],
     "is an image run: generative perplexity scores text runs"),
    ("lm-eval --model_args truncate=maybe", ["lm-eval", "--model", "partgm", "--model_args",
                                              "run=RUN,truncate=maybe"], "truncate=maybe is not a boolean"),
    ("lm-eval --output_path under a file", ["lm-eval", "--model", "partgm", "--model_args", "run=RUN",
                                            "--output_path", "FILE/results"], "cannot be written"),
    # unclear errors, now clear
    ("overrides after distill --resume", ["distill", "RUN", "--run-dir", "CACHE", "--resume", "distill.rounds=3"],
     "cannot resume"),
    ("a file as a run directory", ["sample", "FILE"], "is a file, not a run directory"),
    ("resume a finished distillation", ["distill", "RUN", "--run-dir", "DISTILLED", "--resume"],
     "raise distill.rounds to continue"),
]


def _train_args(corpus: Path, cache: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--algo", "pgm", "--preset", "cpu-tiny", "--run-dir", str(run_dir),
            f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=32", f"data.cache_dir={cache}",
            "train.steps=4", "train.global_batch=4", "train.eval_every=4", "train.save_every=2",
            "train.log_every=1", "train.progress=false", *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return make_world(tmp_path_factory.mktemp("trust"))


def make_world(root: Path) -> dict[str, Path]:
    """A corpus, a trained tiny PGM run, data of another length, a plain file and an exported model."""
    corpus = root / "corpus"
    corpus.mkdir()
    write_corpus(corpus, n_docs=12, stride=7)
    cache, run = root / "cache", root / "run"
    assert main(_train_args(corpus, cache, run)) == 0
    assert main(["prepare", f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=16",
                 f"data.cache_dir={root / 'cache16'}"]) == 0
    (root / "file.txt").write_text("not a directory\n")
    assert main(["hub", "export", str(run), str(root / "export")]) == 0
    config = json.loads((root / "export" / "config.json").read_text())
    (root / "export" / "config.json").write_text(json.dumps({**config, "bos_id": 100000}))
    distilled = root / "distilled"
    assert main(["distill", str(run), "--run-dir", str(distilled), "distill.rounds=1", "distill.steps_per_round=2",
                 "train.eval_every=0", "train.global_batch=4", "train.progress=false"]) == 0
    assert main(["train", "--algo", "pgm-image", "--run-dir", str(root / "img"), f"data.cache_dir={root / 'cache'}",
                 *IMAGE_TINY]) == 0
    make_run(root / "ar", "ar", word_tokenizer(root / "tok"))
    (root / "bad.jsonl").write_text(json.dumps({"text": "the", "token_ids": [0, 9999]}) + "\n")
    (root / "good.jsonl").write_text(json.dumps({"text": "the", "token_ids": [0, 3]}) + "\n")
    folder = root / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return {"CORPUS": corpus, "CACHE": cache, "RUN": run, "FILE": root / "file.txt", "ROOT": root,
            "OTHER_DATA": next((root / "cache16").iterdir()), "EXPORT": root / "export", "OUT": root / "imported",
            "IMG": root / "img", "AR": root / "ar", "DISTILLED": distilled, "BAD_SAMPLES": root / "bad.jsonl",
            "SAMPLES": root / "good.jsonl", "FOLDER": folder}


def _placed(arg: str, world: dict[str, Path]) -> str:
    """``arg`` with the world's placeholders replaced (whole, before a slash, or after ``run=``)."""
    head, slash, tail = arg.partition("/")
    if head in world:
        return str(world[head]) + slash + tail
    return ",".join(f"run={world[p[4:]]}" if p.startswith("run=") and p[4:] in world else p for p in arg.split(","))


def run_bad(argv: list[str], world: dict[str, Path], capsys) -> tuple[int, str]:
    argv = [_placed(a, world) for a in argv]
    if argv[0] == "train" and "--run-dir" not in argv:
        argv = _train_args(world["CORPUS"], world["CACHE"], world["ROOT"] / "fresh", *argv[1:])
    elif argv[0] == "train":
        argv = _train_args(world["CORPUS"], world["CACHE"], Path("unused"), *argv[1:])
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: usage, then one "error:" line
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.mark.parametrize("what, argv, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_one_line(what, argv, expected, world, capsys) -> None:
    code, line = run_bad(argv, world, capsys)
    assert code == 2 and "Traceback" not in line and expected in line, (what, line)


def test_prepare_reports_and_exits_0(world, capsys) -> None:
    capsys.readouterr()
    assert main(["prepare", f"data.corpus={world['CORPUS']}", "data.tokenizer=bpe-300", "data.length=32",
                 f"data.cache_dir={world['CACHE']}"]) == 0
    assert "train rows" in capsys.readouterr().out


def test_metrics_line_without_step_or_utf8_is_skipped(world, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(world["RUN"], run)
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(b'{"loss": 1.0}\n' + b'{"step": 3, "loss": "\xe9"}\n')
    assert main(["plot", str(run)]) == 0
    assert main(_train_args(world["CORPUS"], world["CACHE"], run, "train.steps=6") + ["--resume"]) == 0


def test_read_only_run_directory_is_one_line(world, tmp_path, capsys, monkeypatch) -> None:
    """Root ignores permissions: simulate a read-only disk at the lowest level (every open for writing)."""
    import builtins
    import os

    run = tmp_path / "run"
    shutil.copytree(world["RUN"], run)
    real_open, real_os_open = builtins.open, os.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(tmp_path)) and any(c in mode for c in "wax+"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    def read_only_os_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(os, "open", read_only_os_open)
    for argv in (_train_args(world["CORPUS"], world["CACHE"], run, "train.steps=6") + ["--resume"],
                 ["sample", str(run), "--steps", "2", "--num-samples", "1"],
                 ["eval", "ppl", str(run), "--batch", "4"], ["plot", str(run)]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: ") and "ermission denied" in err[-1], (argv, err)


def test_python_api_refuses_bad_configs_and_options(world) -> None:
    from partgm.config import RunConfig, TrainConfig
    from partgm.errors import PartgmError
    from partgm.run.checkpoint import load_run
    from partgm.samplers import SamplingOptions, generate, make_prompt

    with pytest.raises(PartgmError, match="train.keep_last=-1 must be >= 0"):
        RunConfig(train=TrainConfig(keep_last=-1)).check()
    with pytest.raises(PartgmError, match="steps must be a positive integer, got 2.5"):
        SamplingOptions(steps=2.5)
    run = load_run(world["RUN"])
    with pytest.raises(PartgmError, match="cannot sample 40 tokens: the model's context is 32"):
        generate(run.algorithm, run.model, make_prompt(1, 40, run.algorithm.bos_id), SamplingOptions(steps=2),
                 generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("call, expected", [
    (lambda m: m.generate_text(123), "prompt must be a string or None, not int"),
    (lambda m: m.generate_text(infill={"a": "x"}), "positions are integers >= 0 and texts strings"),
    (lambda m: m.generate_text(steps=2, batch=0), "batch must be a positive integer, got 0"),
    (lambda m: m.generate_text(steps=2, num_samples=2.5), "num_samples must be a positive integer"),
    (lambda m: m.generate_text(steps=2, temperature=1e-300), "temperature must be a finite number >= 0.001"),
    (lambda m: m.score(123), "score needs a text or a list of texts, not 123"),
    (lambda m: m.score([]), "score needs texts"),
    (lambda m: __import__("partgm").load(None), "partgm.load needs a run directory"),
], ids=["prompt 123", "infill keys", "batch 0", "num_samples 2.5", "temperature 1e-300", "score 123",
        "score []", "load None"])
def test_python_api_raises_partgm_errors(call, expected, world) -> None:
    """Issue 23: the API's bad arguments are PartgmError, the same checks as the CLI's (``Draws``,
    ``SamplingOptions``)."""
    import partgm
    from partgm.errors import PartgmError

    with pytest.raises(PartgmError, match=re.escape(expected)):
        call(partgm.load(world["RUN"]))


def test_lm_eval_errors_are_one_line(world, capsys, monkeypatch) -> None:
    """lm-eval mocked: an unknown task (lm-eval raises KeyError / ValueError) is one line, exit 2."""
    import types

    adapter = types.ModuleType("partgm.integrations.lm_eval")

    def fake_main(argv):
        raise KeyError("Tasks not found: lambada_nope")

    adapter.main = fake_main
    monkeypatch.setitem(sys.modules, "partgm.integrations.lm_eval", adapter)
    capsys.readouterr()
    assert main(["lm-eval", "--model", "partgm", "--model_args", f"run={world['RUN']}", "--tasks",
                 "lambada_nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Tasks not found: lambada_nope" in err[0] and "--tasks list" in err[0]


def test_finished_or_distilled_runs_keep_their_weights(world) -> None:
    """The refused distill commands wrote nothing into the distillation they named."""
    before = sorted(p.name for p in (world["DISTILLED"] / "checkpoints").iterdir())
    assert main(["distill", str(world["RUN"]), "--run-dir", str(world["DISTILLED"]), "--resume"]) == 2
    assert sorted(p.name for p in (world["DISTILLED"] / "checkpoints").iterdir()) == before


def errors_page(world: dict[str, Path]) -> str:
    """docs/errors.md: each bad input of ``BAD_INPUTS`` and the message it gets now."""

    class Capture:
        def readouterr(self):
            out = sys.stderr.getvalue() if hasattr(sys.stderr, "getvalue") else ""
            sys.stderr.seek(0)
            sys.stderr.truncate()
            return type("R", (), {"err": out, "out": ""})()

    import io

    rows = []
    for what, argv, _ in BAD_INPUTS:
        saved, sys.stderr = sys.stderr, io.StringIO()
        try:
            _, line = run_bad(argv, world, Capture())
        finally:
            sys.stderr = saved
        shown = " ".join(a if a != NOT_UTF8 and not a.endswith(NOT_UTF8) else a.replace(NOT_UTF8, "caf\\xe9")
                         for a in argv)
        rows.append(f"| {what} | `partgm {shown}` | `{line.replace(str(world['ROOT']), 'DIR')}` |")
    return "\n".join(rows)


if __name__ == "__main__":  # regenerate docs/errors.md's table
    import contextlib
    import io
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            built = make_world(Path(tmp))
        print(errors_page(built))
