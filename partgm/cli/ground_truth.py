"""``partgm eval oracle`` and ``partgm bench quality``: exact quality against a known process
(``partgm.data.hmm``; see docs/ground_truth.md)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from partgm.cli.args import (
    add_overwrite,
    claim_out,
    nonnegative_float,
    nonnegative_floats,
    nonnegative_int,
    positive_int,
    positive_ints,
    seed,
    unit_floats,
)
from partgm.errors import PartgmError


def cmd_eval_oracle(args: argparse.Namespace) -> None:
    from partgm.evaluation.oracle import evaluate_oracle, format_table
    from partgm.fileio import atomic_write_json

    claim_out(args)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    result = evaluate_oracle(args.target, samplers, args.steps, args.num_samples, args.batch, args.seed,
                             args.family, args.length, args.nelbo_draws, args.guidance, args.weights, args.device,
                             args.ceiling)
    print(format_table(result))
    if args.out:
        atomic_write_json(Path(args.out), result)
        print(f"wrote {args.out}")
    else:
        print(json.dumps(result))


def add_eval(eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm eval oracle``."""
    e = eval_sub.add_parser(
        "oracle", help="exact quality on a synthetic corpus: excess NELBO and excess sample NLL, n-gram TV",
        description="TARGET is a run trained on data.corpus=hmm:... (or hmm-image:...), or a process .npz "
                    "(the exact denoiser itself). See docs/ground_truth.md.")
    e.add_argument("target", help="run directory, or process.npz (the exact denoiser)")
    e.add_argument("--samplers", default="auto", help="comma-separated samplers of the model's family")
    e.add_argument("--steps", type=positive_ints, default="8,32", help="comma-separated step counts")
    e.add_argument("--num-samples", type=positive_int, default=256)
    e.add_argument("--batch", type=positive_int, default=64)
    e.add_argument("--nelbo-draws", type=nonnegative_int, default=256, help="fresh draws for (a); 0: skip")
    e.add_argument("--guidance", type=nonnegative_float, default=0.0, help="classifier-free guidance (class-conditional)")
    e.add_argument("--family", default="partition", help="process file only: the sampler family the exact "
                   "denoiser presents itself in (partition, masked, maskgit, pgm-image)")
    e.add_argument("--length", type=positive_int, default=64, help="process file only: the row length")
    e.add_argument("--ceiling", action="store_true", help="a run: also the exact denoiser's numbers with the same "
                   "sampler and steps (the best any model can do with that sampler)")
    e.add_argument("--seed", type=seed, default=0)
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", help="output JSON (default: printed)")
    add_overwrite(e, "an existing --out file")
    e.set_defaults(func=cmd_eval_oracle)


def _own_record(out: Path) -> bool:
    """Whether ``out`` holds an earlier ``partgm bench quality`` record (settings, records, summary)."""
    try:
        record = json.loads(out.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and {"settings", "records", "summary"} <= record.keys()


def cmd_bench_quality(args: argparse.Namespace) -> None:
    import torch

    from partgm.benchmarks.quality import QualitySettings, measure, summarize, train_runs
    from partgm.fileio import atomic_write_text

    if args.report:
        _report_quality(Path(args.out))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    s = QualitySettings.paper() if args.paper else QualitySettings()
    changes = {k: v for k, v in {
        "corpus": args.corpus, "length": args.length, "budget": args.budget, "batch": args.batch,
        "seeds": tuple(range(args.seeds)) if args.seeds else None, "steps": tuple(args.steps) if args.steps else None,
        "num_samples": args.num_samples, "nelbo_draws": args.nelbo_draws, "device": args.device,
        "guidance": args.guidance, "all_samplers": args.all_samplers or None,
        "thresholds": tuple(args.thresholds) if args.thresholds else None,
        "entropy_bounds": tuple(args.entropy_bounds) if args.entropy_bounds else None,
    }.items() if v is not None}
    if args.algos:
        changes["algos"] = tuple(a.strip() for a in args.algos.split(","))
    elif (args.corpus or "").startswith("hmm-image"):
        changes["algos"] = ("pgm-image", "maskgit")
    if args.preset:
        changes["presets"] = {a: args.preset for a in changes.get("algos", s.algos)}
    else:
        changes["presets"] = {a: s.presets.get(a, s.presets["mdlm"]) for a in changes.get("algos", s.algos)}
    s = replace(s, **changes)
    if args.steps is None:  # 8 ... L: the default grid ends at every free position decoded one by one
        s = replace(s, steps=tuple(sorted({min(x, s.length - 1) for x in s.steps} | {s.length - 1})))
    out = Path(args.out)
    if not _own_record(out):  # a rerun replaces its own record (and reuses its runs); nothing else
        claim_out(args, (".png",))
    runs = train_runs(s, Path(args.work) if args.work else out.parent / (out.stem + "-work"))
    records: list[dict] = []

    def on_record(r: dict) -> None:
        records.append(r)
        atomic_write_text(out, json.dumps({"settings": vars(s), "records": records,
                                           "summary": summarize(records)}, indent=2, default=str))
        x, b = r["excess_nll"], r["bigram_tv_excess"]
        print(f"{r['algo']:6s} {r['variant']:24s} seed {r['seed']} steps {r['steps']:5d}  excess NLL "
              f"{x['mean']:+.4f} ± {x['ci95']:.4f}  bigram TV excess {b['mean']:+.4f} ± {b['ci95']:.4f}  "
              f"{r['tokens_per_s']:9,.0f} tok/s  [load {r['load_1m']:.1f}]", flush=True)

    measure(s, runs, on_record)
    _report_quality(out)


def _report_quality(out: Path) -> None:
    """Summary over seeds, the speed-at-equal-quality targets and the plot of the record in ``out``
    (written back into it), printed."""
    from partgm.benchmarks.quality import plot_quality, speed_targets, summarize
    from partgm.fileio import atomic_write_text

    if not _own_record(out):
        raise PartgmError(f"--report reads a `partgm bench quality` record: {out} is not one")
    record = json.loads(out.read_text())
    s, summary = record["settings"], summarize(record["records"])
    for p in summary:
        nelbo = p.get("excess_nelbo")
        print(f"{p['algo']:6s} {p['variant']:24s} steps {p['steps']:5d}  excess NLL {p['excess_nll']['mean']:+.4f} ± "
              f"{p['excess_nll']['ci95']:.4f}" + (f"  excess NELBO {nelbo['mean']:+.4f} ± {nelbo['ci95']:.4f}" if nelbo
                                                   else "") + f"  {p['tokens_per_s']['mean']:9,.0f} tok/s ({p['seeds']} seeds)")
    targets = speed_targets(summary)
    for t in targets:
        ref, fast = t["reference"], t["fastest"]
        where = f"at the quality of {ref['algo']} {ref['variant']} ({ref['steps']} steps, {ref['excess_nll']['mean']:+.3f})"
        if fast is None:
            best = t["best"]
            print(f"{t['candidates']}: no point {where}; its best {best['variant']} ({best['steps']} steps) "
                  f"{best['excess_nll']['mean']:+.3f} ± {best['excess_nll']['ci95']:.3f}")
        else:
            print(f"{t['candidates']}: fastest {where}: {fast['variant']} ({fast['steps']} steps), "
                  f"{t['speedup']['mean']:.2f}x ± {t['speedup']['ci95']:.2f} its tokens/s")
    atomic_write_text(out, json.dumps({**record, "summary": summary, "targets": targets}, indent=2, default=str))
    png = plot_quality(summary, out.with_suffix(".png"), f"{s['corpus']}\nL {s['length']}, {len(s['seeds'])} seeds, "
                       f"equal training FLOPs ({s['budget']} MDLM steps); the oracle's tokens/s are not a network's")
    print(f"wrote {out} and {png}")



def add_bench(bench: argparse._SubParsersAction) -> None:
    """Adds ``partgm bench quality``."""
    p = bench.add_parser("quality", help="PGM vs MDLM vs AR at equal training FLOPs on a known process: "
                                         "excess sample NLL vs tokens/s, the exact denoiser as the ceiling")
    p.add_argument("--paper", action="store_true", help="paper-sized settings (L 1024, the paper's models; a GPU)")
    p.add_argument("--corpus", help="a synthetic corpus spec (hmm:...); default: a 32-state, 64-id HMM")
    p.add_argument("--length", type=positive_int)
    p.add_argument("--preset", help="model preset of all three algorithms (default cpu-tiny)")
    p.add_argument("--algos", help="comma-separated: pgm, mdlm, ar (text; the default), maskgit, pgm-image "
                   "(the default for an hmm-image corpus)")
    p.add_argument("--all-samplers", action="store_true", help="text: also PGM binomial / confidence / halton "
                   "and MDLM ancestral / confidence / halton (and the exact denoiser under each)")
    p.add_argument("--thresholds", type=unit_floats, help="PGM and MDLM threshold sampler points (approximate; "
                   "comma-separated max-probability thresholds in (0, 1]), each with no cap on its calls")
    p.add_argument("--entropy-bounds", type=nonnegative_floats, help="PGM and MDLM eb sampler points "
                   "(approximate; comma-separated entropy bounds in nats), each with no cap on its calls")
    p.add_argument("--guidance", type=nonnegative_float, help="classifier-free guidance (hmm-image corpora)")
    p.add_argument("--budget", type=positive_int, help="training FLOPs, in MDLM steps (default 3000)")
    p.add_argument("--batch", type=positive_int, help="training batch")
    p.add_argument("--seeds", type=positive_int, help="training seeds 0..N-1 (default 3)")
    p.add_argument("--steps", type=positive_ints, help="comma-separated step counts (default 8,16,32,L-1)")
    p.add_argument("--num-samples", type=positive_int, help="samples per point (default 256)")
    p.add_argument("--nelbo-draws", type=nonnegative_int, help="fresh draws for the excess NELBO (default 256)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    add_overwrite(p, "an existing --out (and its PNG)")
    p.add_argument("--report", action="store_true", help="measure nothing: rebuild the summary, the speed-at-equal-"
                   "quality targets and the PNG from the records already in --out")
    p.add_argument("--out", default="benchmarks/results/quality.json",
                   help="JSON output; the PNG goes beside it, the runs under OUT-work/ (or --work)")
    p.add_argument("--work", help="where the data and runs live (reused when complete): share it between "
                   "invocations that measure the same runs differently (e.g. --guidance)")
    p.set_defaults(func=cmd_bench_quality)
