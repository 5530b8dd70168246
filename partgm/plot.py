"""PNG plots of ``RUN/metrics.jsonl``: training loss, validation perplexity and learning rate.

Uses matplotlib's Agg canvas directly, so no global backend is switched and no display is needed.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

from partgm.engine.metrics import read_metrics
from partgm.errors import PartgmError
from partgm.run.layout import METRICS, PLOTS

# (file name, metrics key, y label, log scale, title)
PANELS = (
    ("loss.png", "loss", "training loss", False, "Training loss"),
    ("val_ppl.png", "val_ppl", "validation perplexity", True,
     "Validation perplexity (EMA weights; bound for MDLM / PGM, exact for AR)"),
    ("lr.png", "lr", "learning rate", False, "Learning rate"),
)


def _series(run_dir: Path) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (steps, values)} for each panel's key that the run logged."""
    path = Path(run_dir) / METRICS
    records = read_metrics(path) if path.is_file() else []
    if not records:
        raise PartgmError(f"no metrics to plot in '{run_dir}' (metrics.jsonl is missing or empty)")
    series = {}
    for _, key, *_ in PANELS:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            series[key] = ([s for s, _ in points], [v for _, v in points])
    return series


def readable_log(axis) -> None:
    """A log axis with plain-number ticks at 1, 2 and 5 x 10^k (200, 500, 1000), not 10^k exponents."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(
    path: Path, label: str, log: bool, title: str, curves: dict[str, tuple[list[int], list[float]]]
) -> Path:
    """One figure with a curve per run (``curves``: {run name: (steps, values)}); one run's name goes in
    the title, several runs get a legend."""
    fig = Figure(figsize=(6, 4), layout="tight")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=name)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.set_title(title if len(curves) > 1 else f"{title}\n{next(iter(curves))}", fontsize=10)
    if log:
        ax.set_yscale("log")
        readable_log(ax.yaxis)
    ax.grid(alpha=0.3, which="both")
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
    for file, key, label, log, title in PANELS:
        curves = {name: series[key] for name, series in runs.items() if key in series}
        if curves:
            written.append(_save(Path(out) / file, label, log, title, curves))
    return written


def plot_run(run_dir: Path) -> list[Path]:
    """Plots of one run, written to ``RUN/plots/``."""
    return plot_runs([run_dir], Path(run_dir) / PLOTS)


def label_steps(ax, steps) -> None:
    """A log-scale x axis of sampling steps with one plain integer tick per measured value."""
    values = sorted({int(v) for v in steps})
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
