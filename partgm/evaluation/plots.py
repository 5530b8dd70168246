"""Plots of generative-perplexity results: gen PPL and entropy vs steps, gen PPL vs tokens/s (the
layout of the paper's figure 1).

Inputs are the records ``partgm eval genppl`` writes (keys ``algo``, ``steps``, ``gen_ppl``,
``entropy``, ``run_dir``, ``nucleus``, optionally ``label``) and ``partgm bench sample`` records
(keys ``algo``, ``steps``, ``tokens_per_s``, optionally ``variant`` and ``nucleus``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from partgm.errors import PartgmError
from partgm.plot import label_steps, readable_log


def read_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Records from JSON files (one object or a list) and JSONL files, in order."""
    records: list[dict[str, Any]] = []
    for path in map(Path, paths):
        try:
            text = path.read_text()
        except OSError as exc:
            raise PartgmError(f"cannot read '{path}': {exc.strerror}") from None
        try:
            data = json.loads(text)
            items = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            try:
                items = [json.loads(line) for line in text.splitlines() if line.strip()]
            except json.JSONDecodeError as exc:
                raise PartgmError(f"'{path}' is neither JSON nor JSONL: {exc.msg}") from None
        records += [r for r in items if isinstance(r, dict)]
    return records


def _label(r: dict[str, Any]) -> str:
    if r.get("label"):
        return str(r["label"])
    name = Path(str(r.get("run_dir", ""))).name
    label = f"{r.get('algo', '?')}" + (f" ({name})" if name else "")
    if r.get("nucleus") not in (None, 1.0, 1):
        label += f", p={r['nucleus']:g}"
    if r.get("sampler") not in (None, "auto"):
        label += f", {r['sampler']}"
    return label


def _distinct_colors(ax: Any, n_lines: int) -> None:
    """More lines than the default cycle's 10 colours (e.g. a teacher and its distillation rounds): tab20."""
    if n_lines > 10:
        ax.set_prop_cycle(color=plt.cm.tab20.colors)


def _save(fig: Any, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def plot_genppl_vs_steps(records: list[dict[str, Any]], out_png: str | Path) -> Path:
    """Two panels, gen PPL vs steps and entropy vs steps, one line per run (and sampler, nucleus)."""
    lines: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for r in records:
        if r.get("steps") and r.get("gen_ppl") is not None:
            lines[_label(r)].append(
                (int(r["steps"]), float(r["gen_ppl"]), float(r.get("entropy", float("nan"))))
            )
    if not lines:
        raise PartgmError("no gen PPL records with steps to plot")
    fig, (ax_ppl, ax_ent) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax in (ax_ppl, ax_ent):
        _distinct_colors(ax, len(lines))
    for label, points in sorted(lines.items()):
        points.sort()
        steps = [p[0] for p in points]
        ax_ppl.plot(steps, [p[1] for p in points], marker="o", label=label)
        ax_ent.plot(steps, [p[2] for p in points], marker="o", label=label)
    judges = sorted({str(r.get("judge")) for r in records if r.get("judge")})
    judge = Path(judges[0]).name if len(judges) == 1 else "several judges"
    ax_ppl.set(
        yscale="log",
        xlabel="sampling steps",
        ylabel=f"generative perplexity ({judge})",
        title="Gen PPL vs steps (lower is better)",
    )
    ax_ent.set(
        xlabel="sampling steps", ylabel="unigram entropy (nats)", title="Entropy vs steps"
    )
    readable_log(ax_ppl.yaxis)
    for ax in (ax_ppl, ax_ent):
        label_steps(ax, (p[0] for points in lines.values() for p in points))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, out_png)


def _match(r: dict[str, Any], bench: list[dict[str, Any]]) -> dict[str, Any] | None:
    candidates = [
        b
        for b in bench
        if b.get("algo") == r.get("algo") and b.get("steps") == r.get("steps") and b.get("tokens_per_s")
    ]
    if r.get("nucleus") is not None:
        same_p = [b for b in candidates if b.get("nucleus", r["nucleus"]) == r["nucleus"]]
        candidates = same_p or candidates
    preferred = [b for b in candidates if b.get("variant") == r.get("sampler")]
    return (preferred or candidates or [None])[0]


def plot_genppl_vs_throughput(
    genppl_records: list[dict[str, Any]], bench_records: list[dict[str, Any]], out_png: str | Path
) -> Path:
    """Gen PPL (y) vs sampling tokens/s (x), one line per run, points labelled with their steps; each
    gen PPL record is joined to the bench record of the same algorithm and steps (and nucleus)."""
    lines: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for r in genppl_records:
        if r.get("gen_ppl") is None or not r.get("steps"):
            continue
        b = _match(r, bench_records)
        if b is not None:
            lines[_label(r)].append((float(b["tokens_per_s"]), float(r["gen_ppl"]), int(r["steps"])))
    if not lines:
        raise PartgmError("no gen PPL record has a bench record with the same algo and steps")
    fig, ax = plt.subplots(figsize=(7, 4.8))
    _distinct_colors(ax, len(lines))
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        for x, y, steps in points:
            ax.annotate(str(steps), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    device = next((b.get("device") for b in bench_records if b.get("device")), None)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="sampling throughput (tokens / s)" + (f", {device}" if device else ""),
        ylabel="generative perplexity",
        title="Quality vs speed (labels: sampling steps)",
    )
    readable_log(ax.xaxis)
    readable_log(ax.yaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_png)
