"""Smoke test of the benchmark harness: it runs, writes one JSON record per configuration and a plot.
No timing assertions: speed is measured by `partgm bench`, not by unit tests."""

from __future__ import annotations

import json

from partgm.cli import main

RECORD_KEYS = {"algo", "variant", "preset", "batch", "length", "latency_s_mean", "latency_s_std", "tokens_per_s",
               "peak_mem_bytes", "device", "dtype", "torch", "run_id", "cpu", "threads", "load_1m", "flops",
               "achieved_flops_per_s", "matmul_peak_flops_per_s", "utilisation"}


def test_bench_sample_smoke(tmp_path):
    out = tmp_path / "sample.json"
    assert main(["bench", "sample", "--smoke", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert {(r["algo"], r["variant"]) for r in records} == {
        ("pgm", "uniform"), ("pgm", "binomial"), ("mdlm", "reference"), ("mdlm", "best"), ("ar", "kv-cache")}
    assert all(RECORD_KEYS | {"steps", "sampler_overhead"} <= r.keys() for r in records)
    assert all(r["tokens_per_s"] > 0 and 0.0 <= r["sampler_overhead"] <= 1.0 for r in records)
    assert len({r["run_id"] for r in records}) == 1
    for r in records:
        assert r["achieved_flops_per_s"] == r["flops"] / r["latency_s_mean"]
    pgm = [r for r in records if r["algo"] == "pgm" and r["variant"] == "uniform"]
    assert pgm and all(set(r["ratios"]) == {"mdlm/reference", "mdlm/best"} for r in pgm)
    for r in pgm:
        ref = next(m for m in records if m["algo"] == "mdlm" and m["variant"] == "reference" and m["steps"] == r["steps"])
        assert r["ratios"]["mdlm/reference"]["flop_ceiling"] == ref["flops"] / r["flops"]
    assert out.with_suffix(".png").stat().st_size > 0


def test_ratios_never_mix_run_ids():
    from partgm.benchmarks.accounting import annotate_ratios

    base = {"bench": "sample", "batch": 1, "length": 8, "steps": 4, "flops": 1.0, "tokens_per_s": 1.0}
    records = [{**base, "algo": "pgm", "variant": "uniform", "run_id": "a"},
               {**base, "algo": "mdlm", "variant": "best", "run_id": "b"}]
    annotate_ratios(records)
    assert "ratios" not in records[0]


def test_bench_train_smoke(tmp_path):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--smoke", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert [r["algo"] for r in records] == ["pgm", "mdlm"] and all(RECORD_KEYS <= r.keys() for r in records)
    assert out.with_suffix(".png").stat().st_size > 0
    # Both attention layouts of the Partition Transformer, timed side by side; merged into the same file.
    assert main(["bench", "train", "--smoke", "--algos", "pgm/dense,pgm/blocks", "--out", str(out)]) == 0
    variants = [r["variant"] for r in json.loads(out.read_text())]
    assert variants == ["fwd+bwd, attention auto (dense)", "fwd+bwd", "fwd+bwd, attention dense",
                        "fwd+bwd, attention blocks"]
    assert all(r["flops"] > 0 and r["utilisation"] > 0 for r in json.loads(out.read_text()))


def test_bench_train_rejects_unknown_entry(tmp_path, capsys):
    assert main(["bench", "train", "--smoke", "--algos", "pgm/sparse", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown --algos entry 'pgm/sparse'" in capsys.readouterr().err


def test_bench_rejects_unknown_variant(tmp_path, capsys):
    assert main(["bench", "sample", "--smoke", "--variants", "pgm/warp", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown variant 'pgm/warp'" in capsys.readouterr().err
