"""plot_run / plot_runs write non-empty PNGs, and fail clearly without metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from partgm.errors import PartgmError
from partgm.plot import plot_run, plot_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _fake_run(run_dir: Path, scale: float) -> Path:
    run_dir.mkdir(parents=True)
    records = [
        {"step": s, "loss": scale / s, "lr": 1e-3 * min(1, s / 5), "grad_norm": 1.0} for s in range(1, 21)
    ]
    records += [{"step": s, "val_ppl": 100 * scale / s, "val_nelbo": 1.0, "val_tokens": 10} for s in (10, 20)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_plot_run_writes_pngs(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 1.0)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["loss.png", "val_ppl.png", "lr.png"]
    assert all(p.parent == run / "plots" and p.read_bytes().startswith(PNG) for p in paths)


def test_plot_runs_overlays(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path / "a", 1.0), _fake_run(tmp_path / "b", 2.0)]
    paths = plot_runs(runs, tmp_path / "out")
    assert len(paths) == 3 and all(p.parent == tmp_path / "out" and p.stat().st_size > 1000 for p in paths)


def test_plot_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(PartgmError, match="no metrics to plot"):
        plot_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PartgmError, match="no metrics to plot"):
        plot_run(tmp_path)
