"""``speed_targets``: the fastest point at the reference's quality, its ratio, and the no-point case;
``bench quality --report`` refuses a file that is not its record."""

from __future__ import annotations

import pytest

from partgm.benchmarks.quality import speed_targets
from partgm.cli import main


def point(algo, variant, steps, nll, tps, tv=0.03):
    return {"algo": algo, "variant": variant, "steps": steps, "excess_nll": {"mean": nll, "ci95": 0.1},
            "bigram_tv_excess": {"mean": tv, "ci95": 0.01}, "tokens_per_s": {"mean": tps, "ci95": 0.0}}


def test_fastest_point_within_the_reference_quality_and_the_missed_ar_target():
    points = [point("mdlm", "fast-ancestral", 32, 1.2, 200.0), point("mdlm", "fast-ancestral", 63, 1.0, 100.0),
              point("mdlm", "dual-cache r=2", 63, 1.05, 150.0), point("pgm", "uniform (exact)", 63, 1.05, 300.0),
              point("pgm", "cached r=8", 32, 1.09, 900.0), point("pgm", "cached r=never", 8, 1.5, 5000.0),
              point("pgm", "threshold 0.9", 64, 0.5, 9000.0, tv=0.2),  # better NLL, worse bigrams: excluded
              point("ar", "kv-cache", 63, 0.1, 400.0)]
    vs_mdlm_pgm, vs_mdlm_mdlm, vs_ar = speed_targets(points)
    assert vs_mdlm_pgm["reference"]["steps"] == 63  # MDLM-best at its most steps
    assert vs_mdlm_pgm["fastest"]["variant"] == "cached r=8" and vs_mdlm_pgm["speedup"]["mean"] == pytest.approx(9.0)
    assert vs_mdlm_mdlm["candidates"] == "mdlm" and vs_mdlm_mdlm["fastest"]["variant"] == "dual-cache r=2"
    assert vs_ar["candidates"] == "pgm" and vs_ar["fastest"] is None
    assert vs_ar["best"]["variant"] == "threshold 0.9"


def test_report_refuses_a_foreign_file(tmp_path, capsys):
    other = tmp_path / "x.json"
    other.write_text("[1, 2]")
    assert main(["bench", "quality", "--report", "--out", str(other)]) != 0
    assert "not one" in capsys.readouterr().err
