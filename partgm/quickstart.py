"""``partgm quickstart``: train a small PGM on the bundled King James Bible and print samples.

Sized for 2 CPU cores and under 10 minutes end to end. Re-running it resumes the same run directory
(finishing at once when training is complete) and samples again.
"""

from __future__ import annotations

import time
from pathlib import Path

from partgm.config import resolve_config

QUICKSTART_CONFIG = {
    "algo": "pgm",
    "preset": "cpu-small",
    "data": {"corpus": "kjv", "tokenizer": "bpe-4096", "length": 128},
    "train": {
        "steps": 300,
        "global_batch": 32,
        "lr": 1e-3,
        "warmup_steps": 50,
        "lr_schedule": "cosine",
        "ema_decay": 0.999,
        "log_every": 10,
        "eval_every": 150,
        "eval_batches": 8,
        "save_every": 150,
        "keep_last": 1,
    },
}


def quickstart(run_dir: Path, steps: int = 0, num_samples: int = 4) -> None:
    from partgm.cli import _prepare, sample_run
    from partgm.engine import train

    start = time.time()
    overrides = [f"train.steps={steps}"] if steps else []
    cfg = resolve_config(overrides=overrides, base=QUICKSTART_CONFIG)
    data = _prepare(cfg)
    resume = (run_dir / "config.json").exists()
    result = train(cfg, data, run_dir, resume=resume)
    records = sample_run(run_dir, steps=64, num_samples=num_samples, batch=num_samples, seed=0, nucleus=0.9,
                         progress=False)
    print()
    for r in records:
        text = r["text"].replace("<|endoftext|>", "\n").strip()
        print(f"--- sample {r['index']} (PGM, 64 steps, nucleus 0.9) ---\n{text}\n")
    minutes = (time.time() - start) / 60
    print(f"validation PPL (EMA, NELBO bound): {result.get('val_ppl', float('nan')):.2f}")
    print(f"run saved in {run_dir.resolve()}  ({minutes:.1f} min)")
    print(f"next: partgm sample {run_dir} --prompt 'And God said'  |  partgm plot {run_dir}")
