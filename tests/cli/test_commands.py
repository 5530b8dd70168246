"""End to end through the command line: prepare, train, sample, eval, plot, and the clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_corpus

from partgm.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), n_docs=12, stride=7)


def _train_args(corpus: Path, cache: Path, run_dir: Path, algo: str = "pgm", *extra: str) -> list[str]:
    return ["train", "--algo", algo, "--preset", "cpu-tiny", "--run-dir", str(run_dir),
            f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=32", f"data.cache_dir={cache}",
            "train.steps=4", "train.global_batch=4", "train.eval_every=4", "train.save_every=2",
            "train.log_every=1", "train.progress=false", *extra]


@pytest.fixture(scope="module")
def pgm_run(corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    run_dir = root / "pgm"
    assert main(_train_args(corpus, root / "cache", run_dir)) == 0
    return run_dir


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines  # one line, and the last thing printed
    return errors[0]


def test_train_sample_eval_plot(pgm_run: Path, capsys, tmp_path):
    assert (pgm_run / "config.json").is_file()
    lines = [json.loads(line) for line in (pgm_run / "metrics.jsonl").read_text().splitlines()]
    assert any("val_ppl" in r for r in lines) and any("loss" in r for r in lines)
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(pgm_run), "--steps", "8", "--num-samples", "3", "--batch", "2",
                 "--prompt", "and the lord", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(len(r["token_ids"]) == 32 for r in records)
    assert all(r["text"].startswith("and the lord") for r in records)
    capsys.readouterr()
    assert main(["eval", "ppl", str(pgm_run), "--batch", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["ppl"] > 1.0 and result["tokens"] > 0
    assert main(["plot", str(pgm_run)]) == 0
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in (pgm_run / "plots").iterdir())


@pytest.mark.parametrize("algo", ["mdlm", "mdlm-complement", "ar"])
def test_every_algorithm_trains_and_samples(algo, corpus, tmp_path):
    run_dir = tmp_path / algo
    assert main(_train_args(corpus, tmp_path / "cache", run_dir, algo)) == 0
    assert main(["sample", str(run_dir), "--steps", "8", "--num-samples", "2", "--out", str(tmp_path / "s.jsonl")]) == 0


def test_unknown_option_preset_and_wrong_type(corpus, tmp_path, capsys):
    assert "unknown option 'model.foo'" in _error(capsys, _train_args(corpus, tmp_path, tmp_path / "r", "pgm", "model.foo=1"))
    assert "unknown preset 'huge'" in _error(capsys, ["train", "--preset", "huge"])
    assert "model.hidden_size" in _error(capsys, _train_args(corpus, tmp_path, tmp_path / "r", "pgm",
                                                             "model.hidden_size=abc"))
    assert "unknown algorithm 'diffusion'" in _error(capsys, ["train", "--algo", "diffusion"])


def test_prompt_longer_than_context(pgm_run, capsys):
    err = _error(capsys, ["sample", str(pgm_run), "--prompt", "and the lord " * 40])
    assert "prompt" in err and "32" in err


def test_not_a_run_dir(tmp_path, capsys):
    assert "not a run directory" in _error(capsys, ["sample", str(tmp_path)])
    assert "does not exist" in _error(capsys, ["eval", "ppl", str(tmp_path / "missing")])


def test_tokenizer_vocab_mismatch(pgm_run, tmp_path, capsys):
    from partgm.data import load_tokenizer

    broken = tmp_path / "run"
    _copy_run(pgm_run, broken)
    load_tokenizer("gpt2").save(broken)
    assert "vocab" in _error(capsys, ["sample", str(broken)])


def test_truncated_and_missing_checkpoint(pgm_run, tmp_path, capsys):
    broken = tmp_path / "run"
    _copy_run(pgm_run, broken)
    weights = next((broken / "checkpoints").glob("step_*/ema.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert "ema.safetensors" in _error(capsys, ["sample", str(broken)])
    for ckpt in (broken / "checkpoints").glob("step_*"):
        for f in ckpt.iterdir():
            f.unlink()
        ckpt.rmdir()
    assert "checkpoint" in _error(capsys, ["sample", str(broken)])


def test_empty_corpus_and_unreadable_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("   \n")
    assert "empty" in _error(capsys, ["prepare", f"data.corpus={empty}", f"data.cache_dir={tmp_path}"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    assert "bad.jsonl" in _error(capsys, ["prepare", f"data.corpus={bad}", f"data.cache_dir={tmp_path}"])
    assert "not found" in _error(capsys, ["prepare", f"data.corpus={tmp_path / 'nope.txt'}"])


def test_resume_with_changed_model_config(pgm_run, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    _copy_run(pgm_run, run)
    cache = Path(json.loads((run / "config.json").read_text())["data"]["cache_dir"])
    err = _error(capsys, _train_args(corpus, cache, run, "pgm", "model.hidden_size=128", "--resume"))
    assert "model config changed" in err and "hidden_size" in err


def test_existing_run_dir_needs_resume(pgm_run, corpus, capsys):
    assert "--resume" in _error(capsys, _train_args(corpus, Path("unused"), pgm_run))


def _copy_run(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)
