"""The before / after table of ``benchmarks/images_before_after.sh OUT``: reads OUT/fid-*.json and prints
(and writes OUT/summary.md) one row per run x sampler x guidance, FID-digits and class accuracy with
the authors' sampler numbers and with partgm's earlier ones, each with its 95% interval over the samples.

    python benchmarks/images_summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = {"maskgit-after": "MaskGIT, reference network", "maskgit-before": "MaskGIT, DiT (earlier)",
        "pgm-after": "PGM, authors' layout", "pgm-before": "PGM, grid2d (earlier)"}


def cell(record: dict | None) -> str:
    if record is None:
        return "(missing) | (missing)"
    fid, acc = record["value"], record["class_accuracy"]
    fid_ci, acc_ci = record.get("ci95"), record.get("class_accuracy_ci95")
    fid_text = f"{fid:.2f}" + ("" if fid_ci is None else f" +- {fid_ci:.2f}")
    acc_text = f"{100 * acc:.1f}%" + ("" if acc_ci is None else f" +- {100 * acc_ci:.1f}")
    return f"{fid_text} | {acc_text}"


def main() -> None:
    out = Path(sys.argv[1])
    lines = ["| model | sampler | w | authors' numbers: FID-digits | class acc. | earlier numbers: FID-digits | class acc. |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for run, label in RUNS.items():
        for sampler in ("confidence", "halton"):
            for w in (0, 1):
                pair = []
                for numbers in ("authors", "partgm"):
                    path = out / f"fid-{run}-{sampler}-w{w}-{numbers}.json"
                    pair.append(json.loads(path.read_text()) if path.is_file() else None)
                lines.append(f"| {label} | {sampler} | {w} | {cell(pair[0])} | {cell(pair[1])} |")
    real = next((json.loads(p.read_text()) for p in sorted(out.glob("fid-*.json"))), None)
    if real is not None:
        lines.append(f"\nReal held-out digits ({real['val_split_n']} images): FID-digits {real['val_split_fid_digits']:.2f}, "
                     f"class accuracy {100 * real['classifier_val_accuracy']:.1f}%.")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
