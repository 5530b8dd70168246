"""PNG plots of ``RUN/metrics.jsonl``: training loss, validation perplexity and learning rate.

Uses matplotlib's Agg canvas directly, so no global backend is switched and no display is needed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from partgm.engine.metrics import read_metrics
from partgm.errors import PartgmError

# (file name, metrics key, y label, log scale)
PANELS = (
    ("loss.png", "loss", "training loss", False),
    ("val_ppl.png", "val_ppl", "validation perplexity (bound)", True),
    ("lr.png", "lr", "learning rate", False),
)


def _series(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (steps, values)} for each panel's key that the run logged."""
    path = Path(run_dir) / "metrics.jsonl"
    records = read_metrics(path) if path.is_file() else []
    if not records:
        raise PartgmError(f"no metrics to plot in '{run_dir}' (metrics.jsonl is missing or empty)")
    series = {}
    for _, key, _, _ in PANELS:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            series[key] = ([s for s, _ in points], [v for _, v in points])
    return series


def _save(
    path: Path, key: str, label: str, log: bool, curves: dict[str, tuple[list[int], list[float]]]
) -> Path:
    """One figure with a curve per run (``curves``: {run name: (steps, values)})."""
    fig = Figure(figsize=(6, 4), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_runs(run_dirs: list[Path], out: Path) -> list[Path]:
    """Overlay several runs: ``out/{loss,val_ppl,lr}.png`` (each only if some run logged it)."""
    dirs = [Path(r) for r in run_dirs]
    names = [d.name for d in dirs]
    unique = len(set(names)) == len(names)
    runs = {(d.name if unique else str(d)): _series(d) for d in dirs}
    written = []
    for file, key, label, log in PANELS:
        curves = {name: series[key] for name, series in runs.items() if key in series}
        if curves:
            written.append(_save(Path(out) / file, key, label, log, curves))
    return written


def plot_run(run_dir: Path) -> list[Path]:
    """Plots of one run, written to ``RUN/plots/``."""
    return plot_runs([run_dir], Path(run_dir) / "plots")


def label_steps(ax, steps) -> None:
    """A log-scale x axis of sampling steps with one plain integer tick per measured value."""
    values = sorted({int(v) for v in steps})
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
