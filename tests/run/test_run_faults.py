"""Issue 11, part 3: faults around a run directory: two trainers, stale locks, runs killed before their first
checkpoint or mid-write, a damaged newest checkpoint, and ``--resume`` without repeating the config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import write_corpus

from partgm.cli import main
from partgm.fileio import pid_alive
from partgm.run.lock import LOCK_FILE, RunLock

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "in the beginning god created the heaven and the earth and the earth was without form and void"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), n_docs=10, stride=5, words_per_doc=300, text=TEXT)


def train_args(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--algo", "pgm", "--preset", "cpu-tiny", "--run-dir", str(run_dir),
            f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=32",
            f"data.cache_dir={corpus.parent / 'cache'}", "train.steps=4", "train.global_batch=4",
            "train.eval_every=0", "train.save_every=2", "train.keep_last=0", "train.log_every=1",
            "train.progress=false", *extra]


def dead_pid() -> int:
    pid = 4_194_000
    while pid_alive(pid):
        pid -= 1
    return pid


def last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_second_trainer_is_refused_and_a_stale_lock_is_not(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    lock = RunLock(run)  # another trainer holds the run directory
    try:
        assert main(train_args(corpus, run)) == 2
        assert "is in use by another trainer (PID" in last_error(capsys)
    finally:
        lock.release()
    (run / LOCK_FILE).write_text(f"PID {dead_pid()} on somewhere\n")  # left by a killed trainer
    assert main(train_args(corpus, run)) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]


def test_run_killed_before_its_first_checkpoint_restarts(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run, "train.save_every=100", "train.steps=2")) == 0
    for path in (run / "checkpoints").iterdir():  # as if killed before the first save completed
        path.unlink() if path.is_file() else shutil.rmtree(path)
    assert main(train_args(corpus, run)) == 0  # the same command again
    for path in (run / "checkpoints").iterdir():
        path.unlink() if path.is_file() else shutil.rmtree(path)
    capsys.readouterr()
    assert main(train_args(corpus, run) + ["--resume"]) == 0
    assert "has no checkpoint yet: starting from step 0" in capsys.readouterr().err


def test_stale_temporaries_are_removed(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run)) == 0
    pid = dead_pid()
    stale = [run / "checkpoints" / f".latest.{pid}.tmp", run / f".metrics.jsonl.{pid}.tmp"]
    for path in stale:
        path.write_text("half")
    (run / "checkpoints" / f".tmp-step_00000006-{pid}").mkdir()
    cache = corpus.parent / "cache"
    cache_tmp = cache / f".kjv-gpt2-L128-0123456789ab.{pid}-deadbeef.tmp"
    cache_tmp.mkdir()
    assert main(train_args(corpus, run, "train.steps=6") + ["--resume"]) == 0
    assert not any(p.exists() for p in stale) and not (run / "checkpoints" / f".tmp-step_00000006-{pid}").exists()
    assert main(["prepare", f"data.corpus={corpus}", "data.tokenizer=bpe-300", "data.length=24",
                 f"data.cache_dir={cache}"]) == 0
    assert not cache_tmp.exists()


def test_damaged_newest_checkpoint_falls_back(corpus, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run)) == 0
    newest = run / "checkpoints" / "step_00000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    capsys.readouterr()
    assert main(train_args(corpus, run, "train.steps=6") + ["--resume"]) == 0
    err = capsys.readouterr().err
    assert "resuming from step 2 (step_00000002): skipped the damaged step_00000004" in err


def test_resume_uses_the_runs_own_config(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run)) == 0
    # No corpus, tokenizer, cache or preset on the command line: the run's config.json supplies them.
    assert main(["train", "--run-dir", str(run), "--resume", "train.steps=6"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["steps"] == 6 and config["data"]["corpus"] == str(corpus)
