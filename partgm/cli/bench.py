"""``partgm bench sample | train | images | frontier``: JSON (one record per configuration) and a PNG plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partgm.cli.args import (
    SamplingDefaults,
    add_device,
    add_overwrite,
    add_sampling,
    add_weights,
    claim_out,
    draws,
    nonnegative_floats,
    nonnegative_int,
    positive_int,
    positive_ints,
    refresh_rates,
    unit_floats,
    unit_interval,
)
from partgm.cli.ground_truth import add_bench as add_quality
from partgm.errors import PartgmError

SMOKE = {"pgm": "cpu-tiny", "mdlm": "cpu-tiny", "ar": "cpu-tiny"}


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--pgm-preset", default="pgm-6-6-d1024")
    p.add_argument("--mdlm-preset", default="mdlm-small")
    p.add_argument("--ar-preset", default="mdlm-small")
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--length", type=positive_int, default=1024)
    p.add_argument("--vocab-size", type=positive_int, default=50258)
    add_device(p, "auto")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 autocast on GPU (the paper's protocol), fp32 on CPU")
    p.add_argument("--warmup", type=nonnegative_int, default=2)
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--smoke", action="store_true", help="tiny presets and sizes: checks the harness runs")
    p.add_argument("--out", default=default_out, help="JSON output; the PNG goes beside it (records of the same "
                   "bench already there are kept)")
    add_overwrite(p, "an existing --out (and its PNG)")


def _setup(args: argparse.Namespace):
    import torch

    from partgm.devices import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    presets = {"pgm": args.pgm_preset, "mdlm": args.mdlm_preset, "ar": args.ar_preset}
    if args.smoke:
        presets = dict(SMOKE)
        args.batch, args.length, args.vocab_size, args.warmup, args.repeats = 2, 32, 64, 0, 1
    return device, dtype, presets


def _existing(out: Path, bench: str, overwrite: bool) -> list[dict]:
    """Records already in ``out`` when it is this bench's own JSON list (a grid is measured in several
    invocations), or none. Any other file at ``out`` (or at the PNG beside it) is replaced only with
    ``--overwrite`` (``partgm.fileio.claim_output``)."""
    from partgm.fileio import claim_output

    if out.is_file() and not overwrite:
        try:
            records = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            records = None
        if isinstance(records, list) and all(isinstance(r, dict) and r.get("bench") == bench for r in records):
            return records
    claim_output(out, overwrite, "--out")
    claim_output(out.with_suffix(".png"), overwrite, "--out's PNG")
    return []


def _writer(out: Path, records: list[dict]):
    """Appends each record to ``out`` as it comes (atomically), keeping records already in the file from
    other configurations, so that a grid can be measured in several invocations."""
    from partgm.benchmarks.accounting import annotate_ratios
    from partgm.fileio import atomic_write_text

    def key(r: dict) -> tuple:
        return tuple(r.get(k) for k in ("bench", "algo", "variant", "preset", "batch", "length", "steps", "device"))

    def on_record(record: dict) -> None:
        records[:] = [r for r in records if key(r) != key(record)] + [record]
        annotate_ratios(records)
        atomic_write_text(out, json.dumps(records, indent=2))
        print(f"{record['algo']:5s} {record['variant']:14s} steps={record.get('steps', '-')!s:5s} "
              f"latency {record['latency_s_mean']:.3f}s ± {record['latency_s_std']:.3f}  "
              f"{record['tokens_per_s']:,.0f} tok/s"
              + (f"  sampler overhead {record['sampler_overhead']:.1%}" if record.get("sampler_overhead") else "")
              + (f"  {record['flops'] / 1e12:.3g} TFLOP, {record['achieved_flops_per_s'] / 1e9:.3g} GFLOP/s"
                 f" = {record['utilisation']:.0%} of the matmul peak" if record.get("utilisation") else "")
              + f"  [run {record['run_id']}, load {record['load_1m']:.1f}]",
              flush=True)

    return on_record


def cmd_bench_sample(args: argparse.Namespace) -> None:
    from partgm.benchmarks.plots import plot_sample_bench
    from partgm.benchmarks.sample import SAMPLE_VARIANTS, bench_sample

    device, dtype, presets = _setup(args)
    variants = [tuple(v.split("/")) for v in args.variants.split(",")]
    for v in variants:
        if v not in SAMPLE_VARIANTS:
            raise PartgmError(f"unknown variant '{'/'.join(v)}' (choose from "
                              f"{', '.join('/'.join(k) for k in SAMPLE_VARIANTS)})")
    steps = [4, 8] if args.smoke else args.steps
    out = Path(args.out)
    records = _existing(out, "sample", args.overwrite)
    bench_sample(variants, presets, args.batch, args.length, steps, device, dtype, args.vocab_size, args.warmup,
                 args.repeats, args.nucleus, measure_overhead=not args.no_overhead, on_record=_writer(out, records))
    print(f"wrote {out} and {plot_sample_bench(records, out.with_suffix('.png'))}")


def cmd_bench_train(args: argparse.Namespace) -> None:
    from partgm.benchmarks.plots import plot_train_bench
    from partgm.benchmarks.train import TRAIN_ENTRIES, bench_train

    for entry in args.algos.split(","):
        if entry not in TRAIN_ENTRIES:
            raise PartgmError(f"unknown --algos entry {entry!r} (choose from {', '.join(TRAIN_ENTRIES)})")
    device, dtype, presets = _setup(args)
    out = Path(args.out)
    records = _existing(out, "train", args.overwrite)
    bench_train(args.algos.split(","), presets, args.batch, args.length, device, dtype, args.vocab_size,
                args.warmup, args.repeats, on_record=_writer(out, records))
    print(f"wrote {out} and {plot_train_bench(records, out.with_suffix('.png'))}")



def cmd_bench_frontier(args: argparse.Namespace) -> None:
    import torch

    from partgm.benchmarks.frontier import bench_frontier, plot_frontier
    from partgm.run.checkpoint import atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = {algo: Path(path) for algo, path in (("pgm", args.pgm), ("mdlm", args.mdlm), ("ar", args.ar)) if path}
    refresh = args.refresh
    claim_out(args, (".png",))
    out = Path(args.out)
    records: list[dict] = []

    def on_record(record: dict) -> None:
        records.append(record)
        atomic_write_text(out, json.dumps(records, indent=2))
        calls = record["network_calls_per_seq"]
        print(f"{record['variant']:28s} {record['tokens_per_s']:9,.0f} tok/s  "
              f"{'-' if calls is None else f'{calls:.1f}':>6s} calls/seq  gen PPL {record['gen_ppl']:8.2f}  "
              f"entropy {record['entropy']:.3f}  [run {record['run_id']}, load {record['load_1m']:.1f}]", flush=True)

    bench_frontier(runs, Path(args.judge or args.ar), draws(args), refresh, args.weights, args.device, args.repeats,
                   on_record, args.thresholds, args.entropy_bounds, args.adaptive_steps)
    print(f"wrote {out} and {plot_frontier(records, out.with_suffix('.png'))}")


def cmd_bench_images(args: argparse.Namespace) -> None:
    import torch

    from partgm.benchmarks.images import (
        IMAGE_BENCH_SIZES,
        IMAGE_BENCH_VARIANTS,
        bench_images,
        plot_image_bench,
    )
    from partgm.fileio import atomic_write_text

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes, variants = args.sizes.split(","), args.variants.split(",")
    for name, given, known in (("size", sizes, IMAGE_BENCH_SIZES), ("variant", variants, IMAGE_BENCH_VARIANTS)):
        bad = [g for g in given if g not in known]
        if bad:
            raise PartgmError(f"unknown {name} '{bad[0]}' (choose from {', '.join(known)})")
    claim_out(args, (".png",))
    out = Path(args.out)
    records: list[dict] = []

    def on_record(record: dict) -> None:
        records.append(record)
        atomic_write_text(out, json.dumps(records, indent=2))
        print(f"{record['size']:6s} {record['algo']:9s} {record['sampler']:10s} steps={record['steps']:<3d} "
              f"w={record['guidance']:g}  {record['latency_s_mean']:.3f}s  {record['images_per_s']:.2f} images/s",
              flush=True)

    bench_images(sizes, variants, args.steps, args.guidance, args.batch, args.device, args.warmup, args.repeats,
                 on_record=on_record)
    print(f"wrote {out} and {plot_image_bench(records, out.with_suffix('.png'))}")


def _add_images(bench: argparse._SubParsersAction) -> None:
    """Adds ``partgm bench images``."""
    p = bench.add_parser("images", help="images/s: MaskGIT vs PGM (confidence, Halton), random weights")
    p.add_argument("--sizes", default="digits", help="comma-separated: digits, paper")
    p.add_argument("--variants", default="maskgit/confidence,maskgit/halton,pgm-image/halton,pgm-image/confidence",
                   help="comma-separated algo/sampler")
    p.add_argument("--steps", type=positive_ints, default="32,64", help="comma-separated steps grid")
    p.add_argument("--guidance", type=nonnegative_floats, default="0,3", help="comma-separated guidance weights (0: none)")
    p.add_argument("--batch", type=positive_int, default=32)
    add_device(p, "auto")
    p.add_argument("--warmup", type=nonnegative_int, default=1)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default="benchmarks/results/images.json", help="JSON output; the PNG goes beside it")
    add_overwrite(p, "an existing --out (and its PNG)")
    p.set_defaults(func=cmd_bench_images)


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm bench sample | train | images | frontier``."""
    bench = sub.add_parser("bench", help="speed benchmarks (JSON + PNG)").add_subparsers(
        dest="bench_command", required=True)
    p = bench.add_parser("sample", help="sampling latency / tokens/s: PGM vs MDLM vs AR")
    _common(p, "benchmarks/results/sample.json")
    p.add_argument("--variants", default="pgm/uniform,pgm/binomial,mdlm/reference,mdlm/best,ar/kv-cache",
                   help="comma-separated algo/variant pairs (also pgm/uniform-compile: torch.compile, bucketed)")
    p.add_argument("--steps", type=positive_ints, default="32,128,1024", help="comma-separated steps grid")
    p.add_argument("--nucleus", type=unit_interval, default=1.0)
    p.add_argument("--no-overhead", action="store_true",
                   help="skip the extra run that measures the time spent outside the network")
    p.set_defaults(func=cmd_bench_sample)
    p = bench.add_parser("train", help="training tokens/s (forward + backward): PGM vs MDLM")
    _common(p, "benchmarks/results/train.json")
    p.add_argument("--algos", default="pgm,mdlm",
                   help="comma-separated; pgm/dense, pgm/blocks, pgm/flex, pgm/padded force the PGM attention layout")
    p.set_defaults(pgm_preset="pgm-6-6-d768")  # width and block count of mdlm-small
    p.set_defaults(func=cmd_bench_train)
    _add_images(bench)
    add_quality(bench)
    p = bench.add_parser("frontier", help="trained models: gen PPL and entropy vs tokens/s, PGM exact vs the "
                                          "encoder cache (refresh r) vs MDLM vs AR")
    p.add_argument("--pgm", required=True, help="PGM run directory")
    p.add_argument("--mdlm", help="MDLM run directory (sampled with fast-ancestral)")
    p.add_argument("--ar", help="AR run directory (sampled, and the default judge)")
    p.add_argument("--judge", help="judge: an AR run directory or a transformers model (default --ar)")
    add_sampling(p, SamplingDefaults(num_samples=32, batch=8, sampler=False))
    p.add_argument("--refresh", type=refresh_rates, default="1,2,4,8,never", help="refresh rates of the cached sampler")
    p.add_argument("--thresholds", type=unit_floats, default="0.99,0.9,0.7",
                   help="threshold sampler points (PGM and MDLM; approximate): max-probability thresholds")
    p.add_argument("--entropy-bounds", type=nonnegative_floats, default="0.1,1",
                   help="eb sampler points (PGM and MDLM; approximate): entropy bounds in nats")
    p.add_argument("--adaptive-steps", type=nonnegative_int, default=0,
                   help="cap on the adaptive samplers' network calls (0: the length, no cap)")
    add_weights(p)
    add_device(p)
    p.add_argument("--repeats", type=positive_int, default=3, help="timed round-robin rounds (one batch per point)")
    p.add_argument("--threads", type=nonnegative_int, default=0)
    p.add_argument("--out", default="benchmarks/results/frontier.json")
    add_overwrite(p, "an existing --out (and its PNG)")
    p.set_defaults(func=cmd_bench_frontier)
