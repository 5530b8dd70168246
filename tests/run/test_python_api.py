"""The Python API (``import partgm``), the examples CI runs, sample records, tracker and presets."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import write_corpus

import partgm
from partgm.cli import main
from partgm.errors import PartgmError

pytestmark = pytest.mark.usefixtures("one_thread")
EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), n_docs=8, stride=7, words_per_doc=300, name="doc{i}.txt")


def run_example(name: str, *args: str) -> None:
    """Runs examples/NAME as ``python examples/NAME ARGS`` would, in this process."""
    argv = sys.argv
    sys.argv = [str(EXAMPLES / name), *args]
    try:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def example_run(corpus, tmp_path_factory, monkeypatch_module) -> Path:
    """examples/train_sample_score.py with tiny settings (what CI runs)."""
    run_dir = tmp_path_factory.mktemp("runs") / "pgm"
    monkeypatch_module.chdir(tmp_path_factory.mktemp("cwd"))  # data_cache/ lands there
    run_example("train_sample_score.py", "--run-dir", str(run_dir), "--preset", "cpu-tiny", "--corpus",
                str(corpus), "--tokenizer", "bpe-300", "--length", "32", "--steps", "3", "--batch", "4",
                "--sample-steps", "4")
    return run_dir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_import_partgm_is_light() -> None:
    code = "import sys, partgm; assert 'torch' not in sys.modules, 'torch'; print(partgm.load.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "partgm.api"


def test_examples_run(example_run: Path, capsys) -> None:
    assert (example_run / "checkpoints" / "latest").exists()
    run_example("infill.py", str(example_run), "--steps", "4")
    assert "--- sample 1 ---" in capsys.readouterr().out


def test_model_knows_itself_and_refuses_long_samples(example_run: Path) -> None:
    model = partgm.load(example_run)
    assert (model.algo, model.length, model.step, model.weights) == ("pgm", 32, 3, "ema")
    assert model.tokenizer.vocab_size == model.vocab_size and str(model.device) == "cpu"
    assert "algo='pgm'" in repr(model) and model.num_parameters > 0
    a = model.generate_text("and the lord", steps=4, num_samples=2, seed=3)
    assert a == model.generate_text("and the lord", steps=4, num_samples=2, seed=3)  # same seed, same texts
    assert all(t.startswith("and the lord") for t in a)
    (nll,) = model.score("and the lord said", mc_samples=2)
    assert nll > 0
    with pytest.raises(PartgmError, match="cannot sample 64 tokens: the model's context is 32"):
        model.generate_text(length=64)


def test_sample_records_and_no_overwrite(example_run: Path, capsys) -> None:
    args = ["sample", str(example_run), "--steps", "4", "--num-samples", "2", "--prompt", "and the",
            "--infill", "20:the earth", "--nucleus", "0.9", "--seed", "5"]
    assert main(args) == 0 and main(args) == 0
    first, second = (example_run / "samples" / f"samples-steps4-seed5{s}.jsonl" for s in ("", "-2"))
    assert first.read_text() == second.read_text()  # same seed; the second run got its own file
    record = json.loads(first.read_text().splitlines()[0])
    assert {k: record[k] for k in ("prompt", "infill", "sampler", "steps", "nucleus", "temperature", "seed",
                                   "weights", "step")} == {
        "prompt": "and the", "infill": ["20:the earth"], "sampler": "uniform", "steps": 4, "nucleus": 0.9,
        "temperature": 1.0, "seed": 5, "weights": "ema", "step": 3}
    capsys.readouterr()
    assert main([*args, "--out", str(first)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(first), "--overwrite", "--seed", "6"]) == 0
    assert json.loads(first.read_text().splitlines()[0])["seed"] == 6


class FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter."""

    scalars: ClassVar[list[tuple[str, float, int]]] = []

    def __init__(self, log_dir: str):
        self.log_dir = log_dir

    def add_text(self, *args) -> None:
        pass

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.scalars.append((key, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.scalars.append(("closed", 0.0, 0))


class FakeWandbRun:
    logged: ClassVar[list[tuple[dict, int]]] = []

    def log(self, values: dict, step: int) -> None:
        self.logged.append((values, step))

    def finish(self) -> None:
        self.logged.append(({"finished": True}, -1))


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_tracker_gets_the_metrics_records(tracker: str, corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = FakeWriter
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kwargs: FakeWandbRun()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tb)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    FakeWriter.scalars.clear()
    FakeWandbRun.logged.clear()
    run_dir = tmp_path / "run"
    assert main(["train", "--algo", "ar", "--preset", "cpu-tiny", "--run-dir", str(run_dir), "--tracker", tracker,
                 f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=32",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.steps=2", "train.global_batch=4",
                 "train.log_every=1", "train.eval_every=2", "train.progress=false"]) == 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [(k, v, r["step"]) for r in records for k, v in r.items() if k != "step"]
    if tracker == "tensorboard":
        assert FakeWriter.scalars == [*expected, ("closed", 0.0, 0)]
    else:
        got = [(k, v, step) for values, step in FakeWandbRun.logged[:-1] for k, v in values.items()]
        assert got == expected and FakeWandbRun.logged[-1] == ({"finished": True}, -1)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("train ar (cpu-tiny): ") and "parameters, device cpu, fp32, 4 x 32 = 128 tokens/step" in err[0]
    assert err[1].startswith("step 2/2: train loss ") and "val PPL" in err[1] and "tokens/s" in err[1]
    assert err[2].startswith("done: 2 steps in ")


def test_missing_tracker_package_is_one_line(monkeypatch, tmp_path: Path) -> None:
    from partgm.engine.metrics import open_tracker

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(PartgmError, match=r"needs the wandb package: pip install 'partgm\[wandb\]'"):
        open_tracker("wandb", tmp_path, {})


def test_presets_state_their_vocabulary(capsys, tmp_path: Path) -> None:
    assert main(["presets", "--vocab-size", "1000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("parameters at vocabulary 1,000 (--vocab-size)")
    rows = {tuple(line.split()[:2]) for line in lines[1:]}
    assert ("cpu-tiny", "ar") in rows and ("pgm-8-8", "pgm") in rows and ("pgm-8-8", "mdlm") not in rows
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  tokenizer: bpe-512\n")
    assert main(["presets", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"parameters at vocabulary 512 (data.tokenizer=bpe-512 from {config})")


def test_argparse_did_you_mean(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["sampel"])
    assert "did you mean 'sample'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["presets", "--vocab-szie", "3"])
    assert "did you mean '--vocab-size'?" in capsys.readouterr().err


def test_lm_eval_command_without_lm_eval(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    monkeypatch.delitem(sys.modules, "partgm.integrations.lm_eval", raising=False)
    assert main(["lm-eval", "--model", "partgm", "--model_args", "run=x", "--tasks", "x"]) == 2
    assert "pip install 'partgm[lm-eval]'" in capsys.readouterr().err
