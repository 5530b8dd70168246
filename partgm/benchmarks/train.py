"""``partgm bench train``: forward + backward training throughput of PGM vs MDLM at matched width."""

from __future__ import annotations

from functools import partial

import torch

from partgm.benchmarks.sample import build_random_model
from partgm.benchmarks.timing import autocast_for, environment, time_call
from partgm.schedules import antithetic_times


def bench_train(
    algos: list[str],
    presets: dict[str, str],
    batch: int,
    length: int,
    device: torch.device,
    dtype: str = "fp32",
    vocab_size: int = 50258,
    warmup: int = 1,
    repeats: int = 3,
    seed: int = 0,
    on_record=None,
) -> list[dict]:
    """One record per algorithm: seconds per forward + backward of one batch, and tokens/s."""
    records = []
    env = environment(device, dtype)
    for algo in algos:
        algorithm, model = build_random_model(algo, presets[algo], vocab_size, length, device, seed)
        model.train()
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.randint(0, vocab_size - 1, (batch, length), generator=generator, device=device)
        timing = time_call(partial(_train_step, algorithm, model, x, generator, device, dtype), device, warmup, repeats)
        record = {
            "bench": "train", "algo": algo, "variant": "fwd+bwd", "preset": presets[algo],
            "n_params": sum(p.numel() for p in model.parameters()), "batch": batch, "length": length, **timing,
            "tokens_per_s": batch * length / timing["latency_s_mean"], **env,
        }
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def _train_step(algorithm, model, x: torch.Tensor, generator: torch.Generator, device, dtype: str) -> None:
    """One forward + backward on x [B, L]."""
    t = antithetic_times(x.shape[0], generator, device)
    with autocast_for(device, dtype):
        loss = algorithm.training_loss(model, x, t, generator)
    loss.backward()
    model.zero_grad(set_to_none=True)
