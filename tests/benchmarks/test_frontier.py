"""``partgm bench frontier`` on tiny random runs: one record per point, one run_id, cached r=1 has the
exact sampler's quality numbers (same tokens), and a plot. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_runs import make_run, word_tokenizer

from partgm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_frontier_smoke(tmp_path: Path) -> None:
    tok = word_tokenizer(tmp_path / "tok")
    for algo in ("pgm", "mdlm", "ar"):
        make_run(tmp_path / algo, algo, tok, length=16)
    out = tmp_path / "frontier.json"
    assert main(["bench", "frontier", "--pgm", str(tmp_path / "pgm"), "--mdlm", str(tmp_path / "mdlm"),
                 "--ar", str(tmp_path / "ar"), "--steps", "4", "--refresh", "1,never", "--thresholds", "1",
                 "--entropy-bounds", "1e9", "--num-samples", "4",
                 "--batch", "2", "--repeats", "1", "--weights", "raw", "--out", str(out)]) == 0
    records = {r["variant"]: r for r in json.loads(out.read_text())}
    assert list(records) == ["uniform (exact)", "cached r=1", "cached r=never", "mdlm fast-ancestral (best)",
                             "mdlm dual-cache r=1", "mdlm dual-cache r=never", "pgm threshold 1", "pgm eb 1e+09", "mdlm threshold 1", "mdlm eb 1e+09", "ar kv-cache"]
    calls = {k: r["network_calls_per_seq"] for k, r in records.items()}
    assert calls["pgm threshold 1"] == calls["mdlm threshold 1"] == 15  # one token per call, L 16 - BOS
    assert calls["pgm eb 1e+09"] == calls["mdlm eb 1e+09"] == 1  # everything at once
    assert calls["uniform (exact)"] == 4 and calls["ar kv-cache"] == 15
    assert len({r["run_id"] for r in records.values()}) == 1
    exact, r1 = records["uniform (exact)"], records["cached r=1"]
    assert (exact["gen_ppl"], exact["entropy"]) == (r1["gen_ppl"], r1["entropy"])
    best, dual1 = records["mdlm fast-ancestral (best)"], records["mdlm dual-cache r=1"]
    assert (best["gen_ppl"], best["entropy"]) == (dual1["gen_ppl"], dual1["entropy"])
    assert all(r["tokens_per_s"] > 0 and r["gen_ppl"] > 0 for r in records.values())
    assert out.with_suffix(".png").stat().st_size > 0
