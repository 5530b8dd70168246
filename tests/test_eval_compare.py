"""eval ppl records named by their parameters, and the paired comparison of two runs (issue 24)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_corpus

from partgm.algorithms import get_algorithm
from partgm.cli import main
from partgm.engine.validation import ppl_summary, sequence_nelbos
from partgm.evaluation.ppl import paired_difference
from partgm.models import randomize_
from partgm.resolve import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")
VOCAB, LENGTH = 11, 12


def _rows() -> np.ndarray:
    rows = np.random.default_rng(0).integers(0, VOCAB - 1, size=(10, LENGTH)).astype(np.uint16)
    rows[:, 0] = VOCAB - 1
    return rows


def test_paired_interval_is_tighter_than_the_separate_ones():
    cfg = resolve_config(overrides=["algo=mdlm", "preset=cpu-tiny"])
    algorithm = get_algorithm("mdlm", vocab_size=VOCAB, bos_id=VOCAB - 1, length=LENGTH)
    torch.manual_seed(0)
    a = randomize_(algorithm.build_model(cfg.model), std=0.3, seed=0).eval()
    b = randomize_(algorithm.build_model(cfg.model), std=0.3, seed=0).eval()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01 * torch.randn_like(p))
    va, ca = sequence_nelbos(algorithm, a, _rows(), 4, "cpu", seed=1, draws=8)
    vb, cb = sequence_nelbos(algorithm, b, _rows(), 4, "cpu", seed=1, draws=8)
    sa, sb = ppl_summary(va, ca, False), ppl_summary(vb, cb, False)
    paired = paired_difference(va, ca, vb, cb)
    assert paired["nelbo_diff"] == pytest.approx(sa["nelbo"] - sb["nelbo"], abs=1e-9)
    assert paired["stderr"] < 0.5 * math.hypot(sa["stderr"], sb["stderr"])  # the pairing removes shared noise
    assert paired["low"] < paired["nelbo_diff"] < paired["high"] and paired["stderr_between_sequence"] > 0
    vb_unpaired, _ = sequence_nelbos(algorithm, b, _rows(), 4, "cpu", seed=2, draws=8)  # other draws
    assert paired_difference(va, ca, vb_unpaired, cb)["stderr"] > paired["stderr"]
    same = paired_difference(va, ca, va, ca)
    assert same["nelbo_diff"] == 0 and same["stderr"] == 0 and same["verdict"].startswith("undecided")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    corpus = root / "corpus"
    corpus.mkdir()
    write_corpus(corpus, n_docs=10, stride=5, words_per_doc=200, name="doc{i}.txt")
    runs = []
    for algo in ("pgm", "mdlm", "ar"):
        run = root / algo
        assert main(["train", "--algo", algo, "--preset", "cpu-tiny", "--run-dir", str(run), f"data.corpus={corpus}",
                     "data.tokenizer=bpe-300", "data.length=16", f"data.cache_dir={root / 'cache'}", "train.steps=2",
                     "train.global_batch=4", "train.eval_every=0", "train.progress=false"]) == 0
        runs.append(run)
    return runs


def test_eval_ppl_names_records_by_their_parameters(two_runs):
    run = two_runs[0]
    for draws in ("1", "2"):
        assert main(["eval", "ppl", str(run), "--batch", "8", "--draws", draws, "--max-batches", "1"]) == 0
    names = sorted(p.name for p in (run / "eval").glob("ppl-*.json"))
    assert names == ["ppl-val-step2-d1-s0-b1.json", "ppl-val-step2-d2-s0-b1.json"]


def test_eval_ppl_compare(two_runs, capsys):
    a, b, _ = two_runs
    capsys.readouterr()
    assert main(["eval", "ppl", str(a), "--compare", str(b), "--draws", "2", "--batch", "8", "--max-batches", "1"]) == 0
    line, record = capsys.readouterr().out.strip().splitlines()[-2:]
    result = json.loads(record)
    assert "NELBO A - B" in line and result["verdict"] in line
    assert result["a"]["algo"] == "pgm" and result["b"]["algo"] == "mdlm" and result["draws"] == 2
    assert result["nelbo_diff"] == pytest.approx(result["a"]["nelbo"] - result["b"]["nelbo"], abs=1e-9)
    assert json.loads((Path(a) / "eval" / "compare-mdlm-val-d2-s0.json").read_text()) == result


def test_compare_with_an_exact_likelihood_run(two_runs, capsys):
    assert main(["eval", "ppl", str(two_runs[0]), "--compare", str(two_runs[2]), "--draws", "2", "--batch", "8",
                 "--max-batches", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["b"]["draws"] == 1 and result["draws"] == 2 and "AR" in result["note"]
    assert result["nelbo_diff"] == pytest.approx(result["a"]["nelbo"] - result["b"]["nelbo"], abs=1e-9)
