"""``partgm bench train``: forward + backward training throughput of PGM vs MDLM at matched width."""

from __future__ import annotations

from functools import partial

import torch

from partgm.algorithms import Batch
from partgm.benchmarks.accounting import efficiency, matmul_peak, train_flops
from partgm.benchmarks.sample import build_random_model
from partgm.benchmarks.timing import environment, machine_load, time_interleaved
from partgm.precision import autocast_for
from partgm.schedules import antithetic_times

TRAIN_ENTRIES = ("pgm", "pgm/auto", "pgm/dense", "pgm/blocks", "pgm/flex", "pgm/padded", "mdlm", "ar")


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
    """One record per entry of ``algos``: seconds per forward + backward of one batch, and tokens/s.

    An entry is an algorithm (``pgm``, ``mdlm``, ...), or ``pgm/dense`` / ``pgm/blocks`` to force the
    Partition Transformer's attention layout (``pgm`` alone is ``pgm/auto``). All models are built first and timed round-robin, so a slow phase of the machine hits each alike
    (measured one after the other, the order alone moved the ratio by about 10% on a 2-core CPU)."""
    env = environment(device, dtype)
    steps, n_params, variants, flops, peaks = {}, {}, {}, {}, {}
    for entry in algos:
        algo, _, layout = entry.partition("/")
        overrides = [f"model.attention_layout={layout}"] if layout else []
        algorithm, model = build_random_model(algo, presets[algo], vocab_size, length, device, seed, overrides)
        model.train()
        variants[entry] = "fwd+bwd"
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.randint(0, vocab_size - 1, (batch, length), generator=generator, device=device)
        resolved = model.layout_for(x) if hasattr(model, "layout_for") else "dense"
        if hasattr(model.cfg, "attention_layout"):
            variants[entry] += f", attention {model.cfg.attention_layout}"
            if model.cfg.attention_layout == "auto":
                variants[entry] += f" ({resolved})"
        flops[entry] = train_flops(algo, resolved, model.cfg, batch, length, algorithm.vocab_size,
                                   algorithm.schedule)
        hidden = model.cfg.hidden_size
        if hidden not in peaks:
            peaks[hidden] = matmul_peak(batch * length, hidden, device, dtype)
        flops[entry].update(peaks[hidden])
        steps[entry] = partial(_train_step, algorithm, model, x, generator, device, dtype)
        n_params[entry] = sum(p.numel() for p in model.parameters())
    timings = time_interleaved(steps, device, warmup, repeats)
    records = []
    for entry in algos:
        algo, timing = entry.partition("/")[0], timings[entry]
        record = {
            "bench": "train", "algo": algo, "variant": variants[entry], "preset": presets[algo],
            "n_params": n_params[entry], "batch": batch, "length": length, **timing,
            "tokens_per_s": batch * length / timing["latency_s_mean"], "timing": "interleaved", **env,
            **machine_load(), **flops[entry],
        }
        record.update(efficiency(record))
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def _train_step(algorithm, model, x: torch.Tensor, generator: torch.Generator, device, dtype: str) -> None:
    """One forward + backward on x [B, L]."""
    t = antithetic_times(x.shape[0], generator, device)
    with autocast_for(device, dtype):
        loss = algorithm.training_loss(model, Batch(x), t, generator)
    loss.backward()
    model.zero_grad(set_to_none=True)
