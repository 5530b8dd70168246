"""Gen PPL + entropy of SDTT teachers and their round students at several step counts (KJV, AR judge).

    python benchmarks/distill_eval.py ALGO TEACHER_RUN DISTILL_RUN JUDGE_RUN OUT_DIR [--nucleus 1.0,0.9]

Writes one ``partgm eval genppl`` record per (model, steps, nucleus) to OUT_DIR/genppl-ALGO.jsonl, each
with a ``label`` ("ALGO teacher" / "ALGO round N") and ``tokens_per_s`` (sampling only:
``num_samples * (L - 1) / sample_time_s``, model loading included, so a lower bound).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from partgm.distill.algorithm import ROUNDS_DIR
from partgm.evaluation.genppl import evaluate_genppl, load_judge


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("algo", "teacher", "distill", "judge", "out"):
        p.add_argument(name)
    p.add_argument("--nucleus", default="1.0")
    p.add_argument("--steps", default="8,16,32,64,128")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sampler", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", default="", help="comma-separated rounds to evaluate besides the teacher (default all)")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = load_judge(args.judge, "cpu")
    rounds = sorted((Path(args.distill) / ROUNDS_DIR).glob("round-*"), key=lambda d: int(d.name.split("-")[1]))
    keep = set(args.rounds.split(",")) if args.rounds else None
    models = [(f"{args.algo} teacher", Path(args.teacher))] + [
        (f"{args.algo} round {d.name.split('-')[1]}", d) for d in rounds if keep is None or d.name[6:] in keep
    ]
    path = out / f"genppl-{args.algo}.jsonl"
    done = set()
    if path.exists():
        done = {(r["model"], r["steps"], r["nucleus"]) for r in map(json.loads, path.read_text().splitlines())}
    for nucleus in map(float, args.nucleus.split(",")):
        for steps in map(int, args.steps.split(",")):
            for label, run in models:
                if (label, steps, nucleus) in done:
                    continue
                record = evaluate_genppl(
                    run, judge, num_samples=args.num_samples, steps=steps, batch=args.batch, nucleus=nucleus,
                    sampler=args.sampler, seed=args.seed,
                    out=out / "raw" / f"{label.replace(' ', '-')}-steps{steps}-p{nucleus:g}.json",
                )
                length = record["length"]
                record.update(
                    model=label,
                    label=label + (f", p={nucleus:g}" if nucleus < 1 else ""),
                    tokens_per_s=record["num_samples"] * (length - 1) / record["sample_time_s"],
                    load=os.getloadavg()[0],
                )
                with path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"{label:18s} steps {steps:4d} p {nucleus:g}: gen PPL {record['gen_ppl']:.1f} "
                      f"entropy {record['entropy']:.3f}", flush=True)


if __name__ == "__main__":
    main()
