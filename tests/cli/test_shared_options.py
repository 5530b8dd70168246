"""The shared command-line options reach the library: --precision (the forward really runs in bf16),
--at-eos, --steps N scaling the schedule, tokenize positions, the progress bar's count, lm-eval's
results path (lm-eval mocked)."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from tiny_runs import make_run, out_bias, word_tokenizer

from partgm.cli import build_parser, main
from partgm.config import TrainConfig
from partgm.run.budget import scaled_budget
from partgm.run.sampling import decode_sample, parse_infill

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture
def linear_dtypes():
    """The output dtypes of every nn.Linear forward while the fixture is alive."""
    seen: set[torch.dtype] = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield seen
    handle.remove()


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_genppl_precision_reaches_the_sampler(tmp_path: Path, tok, capsys, linear_dtypes, precision) -> None:
    make_run(tmp_path / "judge", "ar", tok, length=16)
    make_run(tmp_path / "model", "mdlm", tok, length=16, seed=1)
    command = ["eval", "genppl", str(tmp_path / "model"), "--judge", str(tmp_path / "judge"), "--num-samples", "2",
               "--batch", "2", "--steps", "3", "--temperature", "0.5", "--precision", precision, "--quiet"]
    assert main(command) == 0, capsys.readouterr().err
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["precision"] == precision and record["temperature"] == 0.5
    # the judge always runs fp32; the sampler's forwards run in the precision the record names
    assert (torch.bfloat16 in linear_dtypes) == (precision == "bf16")


def test_sample_precision_bf16_runs_the_forward_in_bf16(tmp_path: Path, tok, capsys, linear_dtypes) -> None:
    make_run(tmp_path / "model", "pgm", tok, length=16, seed=1)
    assert main(["sample", str(tmp_path / "model"), "--steps", "3", "--num-samples", "1", "--batch", "1",
                 "--precision", "bf16"]) == 0, capsys.readouterr().err
    assert linear_dtypes == {torch.bfloat16}
    (row,) = [json.loads(line) for line in next((tmp_path / "model" / "samples").glob("*.jsonl")).open()]
    assert row["precision"] == "bf16"


def test_decode_sample_at_eos(tok) -> None:
    ids = tok.encode("the lord") + [tok.eos_id] + tok.encode("said")
    assert decode_sample(tok, ids, "stop") == "the lord"
    assert decode_sample(tok, ids, "strip") == tok.decode(tok.encode("the lord said"))
    assert "<|endoftext|>" in decode_sample(tok, ids, "keep")
    assert decode_sample(tok, tok.encode("said"), "stop") == "said"


def test_sample_at_eos_stop(tmp_path: Path, tok, capsys) -> None:
    make_run(tmp_path / "model", "ar", tok, length=16, bias=out_bias("ar", tok, {"<|endoftext|>": 3.0}))
    args = ["sample", str(tmp_path / "model"), "--num-samples", "4", "--batch", "4"]
    assert main([*args, "--out", str(tmp_path / "keep.jsonl")]) == 0
    assert main([*args, "--out", str(tmp_path / "stop.jsonl"), "--at-eos", "stop"]) == 0
    keep, stop = ([json.loads(line) for line in (tmp_path / f"{n}.jsonl").open()] for n in ("keep", "stop"))
    assert any("<|endoftext|>" in r["text"] for r in keep)
    assert all("<|endoftext|>" not in r["text"] for r in stop)
    assert [r["token_ids"] for r in keep] == [r["token_ids"] for r in stop]  # the same draws, cut text


def test_tokenize_positions_match_infill(tmp_path: Path, tok, capsys) -> None:
    make_run(tmp_path / "model", "pgm", tok, length=16)
    capsys.readouterr()
    assert main(["tokenize", str(tmp_path / "model"), "the lord said", "--at", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {int(line.split()[0]): int(line.split()[1]) for line in lines[:-1]}
    assert rows == parse_infill(["5:the lord said"], tok)
    assert main(["tokenize", str(tmp_path / "model"), "the lord"]) == 0
    assert "2 tokens at positions 1..2" in capsys.readouterr().out  # after BOS, as --prompt


def test_scaled_budget_rule() -> None:
    train = TrainConfig(steps=1000, warmup_steps=100, eval_every=250, save_every=250)
    assert scaled_budget(train, 200) == {"steps": 200, "warmup_steps": 20, "eval_every": 50, "save_every": 50}
    assert scaled_budget(train, 1) == {"steps": 1, "warmup_steps": 0, "eval_every": 1, "save_every": 1}
    assert scaled_budget(train, 4000)["eval_every"] == 1000


def test_train_steps_flag_scales_and_explicit_overrides_win() -> None:
    from partgm.cli.train import _resolve

    args = build_parser().parse_args(["train", "--steps", "200", "train.save_every=7"])
    t = _resolve(args).train
    assert (t.steps, t.warmup_steps, t.eval_every, t.save_every) == (200, 20, 50, 7)


def test_mdlm_progress_bar_counts_the_steps_asked(tmp_path: Path, tok, capsys) -> None:
    make_run(tmp_path / "model", "mdlm", tok, length=16)
    assert main(["sample", str(tmp_path / "model"), "--steps", "64", "--num-samples", "1", "--batch", "1"]) == 0
    err = capsys.readouterr().err
    assert "64/64" in err and "/62" not in err


def test_lm_eval_results_go_to_the_run(tmp_path: Path, tok, capsys, monkeypatch) -> None:
    """lm-eval mocked: its simple_evaluate result lands in RUN/eval/lm-eval/TASK.json, and git's commit
    lookup (which prints 'fatal: not a git repository' outside a repository) is not called."""
    run = tmp_path / "model"
    make_run(run, "pgm", tok, length=16)
    calls = []
    evaluator = types.ModuleType("lm_eval.evaluator")

    def git_hash():
        calls.append("git")
        print("fatal: not a git repository", file=sys.stderr)

    evaluator.get_git_commit_hash = git_hash
    evaluator.simple_evaluate = lambda **kw: {"results": {"lambada_x": {"acc,none": 0.5}}, "versions":
                                              {"lambada_x": 1.0}, "n-shot": {"lambada_x": 0}, "config": kw}
    adapter = types.ModuleType("partgm.integrations.lm_eval")

    def fake_main(argv):
        evaluator.get_git_commit_hash()
        sys.modules["lm_eval.evaluator"].simple_evaluate(model="partgm", model_args=argv[3])

    adapter.main = fake_main
    monkeypatch.setitem(sys.modules, "lm_eval", types.ModuleType("lm_eval"))
    monkeypatch.setitem(sys.modules, "lm_eval.evaluator", evaluator)
    monkeypatch.setitem(sys.modules, "partgm.integrations.lm_eval", adapter)
    assert main(["lm-eval", "--model", "partgm", "--model_args", f"run={run},mc_samples=2", "--tasks",
                 "lambada_x"]) == 0
    out = run / "eval" / "lm-eval" / "lambada_x.json"
    record = json.loads(out.read_text())
    assert record["task"] == "lambada_x" and record["metrics"] == {"acc,none": 0.5} and record["versions"] == 1.0
    assert calls == [] and "fatal" not in capsys.readouterr().err
    assert evaluator.get_git_commit_hash is git_hash  # put back afterwards


def test_help_names_every_algorithm_sampler_and_preset(capsys) -> None:
    from partgm.algorithms import ALGORITHMS
    from partgm.resolve import PRESETS
    from partgm.samplers import sampler_names

    def help_of(*command: str) -> str:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        return re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse wraps lines, at hyphens too

    train = help_of("train")
    assert all(name in train for name in ALGORITHMS.names()) and {"maskgit", "pgm-image"} <= set(ALGORITHMS.names())
    assert all(name in train for name in PRESETS.names())
    assert "each .txt file is one document" in train.lower()
    sample = help_of("sample")
    offered = {name: sampler_names(ALGORITHMS.get(name)) for name in ALGORITHMS.names()}
    assert all(f"{name}: {' | '.join(names)}" in sample for name, names in offered.items())
