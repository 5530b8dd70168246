"""``partgm bench sample``: sampling latency and throughput of PGM vs MDLM vs AR, side by side."""

from __future__ import annotations

from functools import partial

import torch

from partgm.algorithms import TokenSpace, build_algorithm
from partgm.benchmarks.accounting import efficiency, matmul_peak, sample_flops
from partgm.benchmarks.timing import environment, machine_load, network_time_share, time_call
from partgm.models import randomize_
from partgm.precision import autocast_for
from partgm.resolve import resolve_config
from partgm.samplers import SamplingOptions, generate, get_sampler, make_prompt
from partgm.samplers.adaptive import AdaptiveSampler, ThresholdSampler
from partgm.samplers.cost import Workload
from partgm.samplers.partition import CompiledPacked, UniformSampler

# (algo, variant) -> sampler name (or a factory of a configured sampler). MDLM "reference" is the paper's
# sampler (float64 probabilities over all L x V every step); "best" is our fastest exact MDLM sampler.
SAMPLE_VARIANTS: dict[tuple[str, str], object] = {
    ("pgm", "uniform"): "uniform",
    ("pgm", "uniform-compile"): lambda: UniformSampler(CompiledPacked(bucket=256)),  # <= L / 256 graphs
    ("pgm", "binomial"): "binomial",
    ("mdlm", "reference"): "ancestral",
    ("mdlm", "best"): "fast-ancestral",
    ("ar", "kv-cache"): "ancestral",
    # approximate, opt-in (``samplers.adaptive``): ``steps`` caps their calls; on random weights no position
    # passes tau 0.9, so they run at the cap, each call querying every remaining position (the cost side)
    ("pgm", "threshold"): lambda: ThresholdSampler(0.9),
    ("mdlm", "threshold"): lambda: ThresholdSampler(0.9),
}


def build_random_model(
    algo: str, preset: str, vocab_size: int, length: int, device: torch.device, seed: int = 0,
    overrides: list[str] | None = None,
):
    """(algorithm, model) with random weights in eval mode: speed does not depend on training."""
    cfg = resolve_config(overrides=[f"algo={algo}", f"preset={preset}", "model.dropout=0.0", *(overrides or [])])
    algorithm = build_algorithm(cfg, TokenSpace(vocab_size, length, bos_id=vocab_size - 1))
    model = randomize_(algorithm.build_model(cfg.model), seed=seed).to(device).eval()
    return algorithm, model


def bench_sample(
    variants: list[tuple[str, str]],
    presets: dict[str, str],
    batch: int,
    length: int,
    steps_grid: list[int],
    device: torch.device,
    dtype: str = "fp32",
    vocab_size: int = 50258,
    warmup: int = 1,
    repeats: int = 3,
    nucleus: float = 1.0,
    seed: int = 0,
    measure_overhead: bool = True,
    on_record=None,
) -> list[dict]:
    """One record per (variant, steps): latency per batch (mean, std), tokens/s = batch * length / latency,
    the sampler's overhead (the share of one extra run spent outside the network's forward passes), the
    analytic FLOPs, achieved FLOP/s and utilisation of the matmul peak measured now at the model's shape."""
    records = []
    env = environment(device, dtype)
    peaks: dict[int, dict] = {}
    for algo, variant in variants:
        algorithm, model = build_random_model(algo, presets[algo], vocab_size, length, device, seed)
        n_params = sum(p.numel() for p in model.parameters())
        hidden = model.cfg.hidden_size
        if hidden not in peaks:
            peaks[hidden] = matmul_peak(batch * length, hidden, device, dtype)
        sampler = SAMPLE_VARIANTS[(algo, variant)]
        sampler = get_sampler(algorithm, sampler) if isinstance(sampler, str) else sampler()
        for steps in steps_grid:
            generator = torch.Generator(device=device).manual_seed(seed)
            run = partial(_sample_once, algorithm, model, batch, length, steps, sampler,
                          nucleus, generator, device, dtype)
            timing = time_call(run, device, warmup, repeats)
            timing["sampler_overhead"] = 1.0 - network_time_share(run, model, device) if measure_overhead else None
            record = {
                "bench": "sample", "algo": algo, "variant": variant, "preset": presets[algo], "n_params": n_params,
                "batch": batch, "length": length, "steps": steps, "nucleus": nucleus, **timing,
                "tokens_per_s": batch * length / timing["latency_s_mean"], **env, **machine_load(),
                **sample_flops(sampler, Workload(model.cfg, batch, length, steps, algorithm.vocab_size)),
                **peaks[hidden],
            }
            if isinstance(sampler, AdaptiveSampler):
                record["network_calls_per_seq"] = len(sampler.last_widths)
            record.update(efficiency(record))
            records.append(record)
            if on_record is not None:
                on_record(record)
    return records


def _sample_once(algorithm, model, batch, length, steps, sampler, nucleus, generator, device, dtype) -> torch.Tensor:
    prompt = make_prompt(batch, length, algorithm.bos_id, device=device)
    with autocast_for(device, dtype):
        return generate(algorithm, model, prompt, SamplingOptions(steps=steps, nucleus=nucleus), sampler, generator)
