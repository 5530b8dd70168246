"""Issue 11, part 2: validation perplexity with its error bar, independent of the batch size, and the same
number from the training-time evaluation and ``partgm eval ppl``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_corpus

from partgm.algorithms import get_algorithm
from partgm.cli import main
from partgm.engine import evaluate_ppl
from partgm.models import randomize_
from partgm.resolve import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB, LENGTH = 11, 12
TEXT = "in the beginning god created the heaven and the earth and the earth was without form and void"


def tiny(algo: str):
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny"])
    algorithm = get_algorithm(algo, vocab_size=VOCAB, bos_id=VOCAB - 1, length=LENGTH)
    torch.manual_seed(0)
    return algorithm, randomize_(algorithm.build_model(cfg.model), std=0.3, seed=0).eval()


def val_rows() -> np.ndarray:
    rows = np.random.default_rng(0).integers(0, VOCAB - 1, size=(10, LENGTH)).astype(np.uint16)
    rows[:, 0] = VOCAB - 1
    return rows


@pytest.mark.parametrize("algo", ["pgm", "mdlm"])
def test_estimate_does_not_depend_on_the_batch_size(algo: str) -> None:
    algorithm, model = tiny(algo)
    results = [evaluate_ppl(algorithm, model, val_rows(), batch, "cpu", seed=3, draws=3) for batch in (1, 3, 10)]
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key, value in results[0].items():
            assert other[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    r = results[0]
    assert r["draws"] == 3 and r["sequences"] == 10 and r["tokens"] == 10 * LENGTH
    assert r["stderr_kind"] == "within-sequence" and r["stderr"] > 0
    assert r["ppl_low"] < r["ppl"] < r["ppl_high"]


def test_one_draw_uses_the_spread_between_sequences_and_ar_is_exact() -> None:
    algorithm, model = tiny("pgm")
    one = evaluate_ppl(algorithm, model, val_rows(), 4, "cpu", draws=1)
    assert one["stderr_kind"] == "between-sequence" and one["stderr"] > 0
    ar, ar_model = tiny("ar")
    exact = evaluate_ppl(ar, ar_model, val_rows(), 4, "cpu", draws=5)
    assert exact["stderr"] == 0.0 and exact["draws"] == 1 and exact["tokens"] == 10 * (LENGTH - 1)
    assert exact["ppl_low"] == exact["ppl"] == exact["ppl_high"]


def test_more_draws_narrow_the_interval() -> None:
    algorithm, model = tiny("mdlm")
    few, many = (evaluate_ppl(algorithm, model, val_rows(), 5, "cpu", draws=k) for k in (2, 16))
    assert many["stderr"] < few["stderr"]
    assert many["ppl_low"] <= few["ppl_high"] and few["ppl_low"] <= many["ppl_high"]


def test_training_eval_and_eval_ppl_agree(tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus, n_docs=10, stride=5, words_per_doc=300, text=TEXT, name="doc{i}.txt")
    run = tmp_path / "run"
    assert main(["train", "--algo", "pgm", "--preset", "cpu-tiny", "--run-dir", str(run), f"data.corpus={corpus}",
                 "data.tokenizer=bpe-300", "data.length=32", f"data.cache_dir={tmp_path / 'cache'}",
                 "train.steps=4", "train.global_batch=4", "train.eval_every=4", "train.eval_draws=4",
                 "train.progress=false"]) == 0
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in logged if "val_ppl" in r)
    assert val["val_draws"] == 4 and val["val_ppl_low"] < val["val_ppl"] < val["val_ppl_high"]
    capsys.readouterr()
    for seed, exact in ((0, True), (1, False)):  # the training evaluation used train.seed = 0
        assert main(["eval", "ppl", str(run), "--draws", "4", "--batch", "3", "--seed", str(seed)]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        result = json.loads(out[-1])
        assert out[-2].startswith("val PPL ") and "95% interval" in out[-2]
        assert result["data"] and result["draws"] == 4
        if exact:
            assert result["nelbo"] == pytest.approx(val["val_nelbo"], rel=1e-6)
        assert result["ppl_low"] <= val["val_ppl_high"] and val["val_ppl_low"] <= result["ppl_high"]
