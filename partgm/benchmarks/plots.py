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
    for r in records:  # measured speed-up and FLOP ceiling, within one run_id only (accounting.annotate_ratios)
        if r["algo"] == "pgm" and r["variant"] == "uniform" and r.get("ratios"):
            text = [f"{v['measured']:.1f}x vs {k}" + (f" (FLOP ceiling {v['flop_ceiling']:.1f}x)"
                                                      if v.get("flop_ceiling") else "")
                    for k, v in r["ratios"].items()]
            if r.get("utilisation"):
                text.append(f"{r['utilisation']:.0%} of matmul peak")
            ax.annotate("\n".join(text), (r["steps"], r["tokens_per_s"]),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
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
    ax.bar(labels, values, color=[f"C{i}" for i in range(len(values))])
    for i, (v, r) in enumerate(zip(values, records)):
        util = f"\n{r['utilisation']:.0%} of peak" if r.get("utilisation") else ""
        ax.text(i, v, f"{v:,.0f}{util}", ha="center", va="bottom", fontsize=8)
    first = records[0]
    ax.set(ylabel="training tokens / s (fwd + bwd)",
           title=f"Training throughput, batch {first['batch']}, L {first['length']}, {first['device']}")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
