"""Plots of benchmark JSON: tokens/s vs steps with the PGM speed-up annotated; training throughput bars."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from partgm.plot import label_steps


def _label(r: dict) -> str:
    return f"{r['algo']} ({r['variant']}, {r['preset']})"


def plot_sample_bench(records: list[dict], out_png: Path) -> Path:
    """tokens/s vs steps, one line per algorithm/variant; PGM-uniform over MDLM (reference, best) annotated."""
    lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        lines[_label(r)].append((r["steps"], r["tokens_per_s"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    mdlm = {(r["variant"], r["steps"]): r["tokens_per_s"] for r in records if r["algo"] == "mdlm"}
    for r in records:
        speedups = [f"{r['tokens_per_s'] / mdlm[v, r['steps']]:.1f}x vs MDLM {v}" for v in ("reference", "best")
                    if (v, r["steps"]) in mdlm]
        if r["algo"] == "pgm" and r["variant"] == "uniform" and speedups:
            ax.annotate("\n".join(speedups), (r["steps"], r["tokens_per_s"]),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=9)
    first = records[0]
    devices = ", ".join(sorted({r["device"] for r in records}))
    ax.set(yscale="log", xlabel="sampling steps", ylabel="tokens / s",
           title=f"Sampling throughput, batch {first['batch']}, L {first['length']}, {devices}")
    label_steps(ax, (r["steps"] for r in records))
    ax.margins(x=0.3, y=0.15)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def plot_train_bench(records: list[dict], out_png: Path) -> Path:
    """Bar chart of training tokens/s per algorithm."""
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{r['algo']}\n{r['preset']}\n{r['variant'].removeprefix('fwd+bwd').strip(', ')}" for r in records]
    values = [r["tokens_per_s"] for r in records]
    ax.bar(labels, values, color=["tab:blue", "tab:orange", "tab:green", "tab:red"][: len(values)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=9)
    first = records[0]
    ax.set(ylabel="training tokens / s (fwd + bwd)",
           title=f"Training throughput, batch {first['batch']}, L {first['length']}, {first['device']}")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
