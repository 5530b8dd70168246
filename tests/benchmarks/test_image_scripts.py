"""The image benchmark scripts end to end: the glyphs pipeline at its tiny scale (render -> vq train ->
MaskGIT and PGM -> samples -> FID-glyphs with intervals -> summary), and the before/after table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FONTS = Path("/usr/share/fonts/truetype/dejavu")


@pytest.mark.slow
@pytest.mark.skipif(not any(FONTS.glob("*.ttf")), reason="needs the DejaVu fonts (fonts-dejavu-core)")
def test_glyphs_end_to_end_tiny(tmp_path):
    out = tmp_path / "glyphs"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "glyphs_end_to_end.py"), str(out), "--scale",
                           "tiny", "--seeds", "1"], check=False, capture_output=True, text=True, timeout=600,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 16 and len({r["run_id"] for r in records}) == 1  # 2 models x 2 samplers x 2 x 2
    assert all(r["fid_glyphs_ci95"] >= 0 and r["images_per_s"] > 0 for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["classifier_accuracy_on_real"] <= 1 and len(summary["rows"]) == 16
    assert "chance" in (out / "summary.md").read_text() and list(out.glob("grid-*.png"))


def test_before_after_table(tmp_path):
    record = {"value": 2.5, "ci95": 0.5, "class_accuracy": 0.9, "class_accuracy_ci95": 0.02,
              "val_split_n": 180, "val_split_fid_digits": 2.57, "classifier_val_accuracy": 0.98}
    (tmp_path / "fid-pgm-after-halton-w1-authors.json").write_text(json.dumps(record))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "images_summary.py"), str(tmp_path)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "summary.md").read_text()
    assert "| PGM, authors' layout | halton | 1 | 2.50 +- 0.50 | 90.0% +- 2.0 | (missing) | (missing) |" in table
    assert "FID-digits 2.57" in table
