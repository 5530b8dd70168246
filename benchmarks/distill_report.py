"""Collect the SDTT measurements (benchmarks/distill_eval.py output) into committed JSON + a Markdown table.

    python benchmarks/distill_report.py RESULTS_DIR

Reads RESULTS_DIR/genppl-*.jsonl; writes RESULTS_DIR/genppl.json (one record per model, steps, nucleus),
RESULTS_DIR/bench.json (sampling tokens/s per algo, steps and nucleus: the median over the teacher and
its students, which share one network shape) and prints the table. Then draw the plots with
``partgm plot --genppl RESULTS_DIR/genppl.json --bench RESULTS_DIR/bench.json --out RESULTS_DIR``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

KEEP = ("label", "model", "algo", "steps", "nucleus", "gen_ppl", "entropy", "num_samples", "length", "judge",
        "weights", "tokens_per_s", "sample_time_s", "load", "run_dir", "model_step")


def main() -> None:
    out = Path(sys.argv[1])
    records = [
        {k: r.get(k) for k in KEEP}
        for path in sorted(out.glob("genppl-*.jsonl"))
        for r in map(json.loads, path.read_text().splitlines())
    ]
    speeds: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        speeds[(r["algo"], r["steps"], r["nucleus"])].append(r["tokens_per_s"])
    bench = [
        {"algo": a, "steps": s, "nucleus": p, "tokens_per_s": statistics.median(v), "runs": len(v), "device": "cpu"}
        for (a, s, p), v in sorted(speeds.items())
    ]
    (out / "genppl.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")

    table: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for r in records:
        table[r["label"]][r["steps"]] = (r["gen_ppl"], r["entropy"])
    steps = sorted({r["steps"] for r in records})
    print("| model | " + " | ".join(f"{s} steps" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for label, row in table.items():
        cells = [f"{row[s][0]:.1f} ({row[s][1]:.2f})" if s in row else "" for s in steps]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n| algo | nucleus | " + " | ".join(f"{s} steps" for s in steps) + " |")
    print("|---|---|" + "---|" * len(steps))
    for a, p in sorted({(b["algo"], b["nucleus"]) for b in bench}):
        row = {b["steps"]: b["tokens_per_s"] for b in bench if (b["algo"], b["nucleus"]) == (a, p)}
        print(f"| {a} | {p:g} | " + " | ".join(f"{row[s]:.0f}" if s in row else "" for s in steps) + " |")


if __name__ == "__main__":
    main()
