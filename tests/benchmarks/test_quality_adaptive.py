"""``bench quality`` with the adaptive samplers: their points for PGM and MDLM, with network calls per
sequence (tau 1: one call per free position; an infinite entropy bound: one call)."""

from __future__ import annotations

import json

import pytest

from partgm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_quality_adaptive_points(tmp_path):
    out = tmp_path / "q.json"
    assert main(["bench", "quality", "--corpus", "hmm:states=4,vocab=6,docs=200", "--length", "9", "--budget", "3",
                 "--batch", "4", "--seeds", "1", "--steps", "2", "--num-samples", "8", "--nelbo-draws", "8",
                 "--algos", "pgm,mdlm", "--thresholds", "1", "--entropy-bounds", "1e9", "--out", str(out)]) == 0
    points = {(p["algo"], p["variant"]): p for p in json.loads(out.read_text())["summary"]}
    for algo in ("pgm", "mdlm"):
        assert points[(algo, "threshold 1")]["network_calls_per_seq"] == 8  # L 9 - BOS, one per call
        assert points[(algo, "eb 1e+09")]["network_calls_per_seq"] == 1
        assert points[(algo, "threshold 1")]["steps"] == 9  # uncapped
    assert points[("pgm", "uniform (exact)")]["network_calls_per_seq"] is None
    assert points[("oracle", "threshold 1 (partition)")]["network_calls_per_seq"] == 8  # the exact denoiser too
    with pytest.raises(SystemExit) as error:
        main(["bench", "quality", "--thresholds", "0", "--out", str(out)])
    assert error.value.code == 2
