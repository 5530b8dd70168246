"""Where a training step's time goes, PGM vs MDLM: relative shares only (valid under load; absolute
times are not). One warm-up step, then ``--steps`` profiled forward + backward steps per algorithm.

    python benchmarks/profile_train.py --preset cpu-small --batch 4 --length 1024 --steps 2

Prints, per algorithm, the top torch ops by self CPU time (share of the total) and the top partgm
functions by cumulative time (cProfile, share of the step).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch
from torch.profiler import ProfilerActivity, profile

from partgm.benchmarks.sample import build_random_model
from partgm.benchmarks.train import _train_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--algos", default="pgm,mdlm")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--vocab-size", type=int, default=50258)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=14)
    args = p.parse_args()
    device = torch.device("cpu")
    for algo in args.algos.split(","):
        name, _, layout = algo.partition("/")
        overrides = [f"model.attention_layout={layout}"] if layout else []
        algorithm, model = build_random_model(name, args.preset, args.vocab_size, args.length, device, 0, overrides)
        model.train()
        generator = torch.Generator().manual_seed(0)
        x = torch.randint(0, args.vocab_size - 1, (args.batch, args.length), generator=generator)
        _train_step(algorithm, model, x, generator, device, "fp32")  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                _train_step(algorithm, model, x, generator, device, "fp32")
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n== {algo} ({args.preset}, B {args.batch}, L {args.length}): torch ops by self CPU share")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
            print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.count:6d}x  {e.key}")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.steps):
            _train_step(algorithm, model, x, generator, device, "fp32")
        profiler.disable()
        stats = pstats.Stats(profiler)
        step_time = max(v[3] for k, v in stats.stats.items() if k[2] == "_train_step")
        rows = [(v[3], k) for k, v in stats.stats.items() if "partgm" in k[0] and k[2] != "_train_step"]
        print(f"== {algo}: partgm functions by cumulative share of the step")
        for cum, (file, line, fn) in sorted(rows, reverse=True)[: args.top]:
            print(f"  {100 * cum / step_time:5.1f}%  {file.split('partgm/')[-1]}:{line} {fn}")


if __name__ == "__main__":
    main()
