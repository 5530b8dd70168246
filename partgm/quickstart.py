"""``partgm quickstart``: train a small PGM on the bundled King James Bible and print samples.

Sized for 2 CPU cores and under 10 minutes end to end. Re-running it resumes the same run directory
(finishing at once when training is complete) and samples again.
"""

from __future__ import annotations

import time
from pathlib import Path

from partgm.resolve import resolve_config
from partgm.run.budget import scaled_budget
from partgm.run.layout import METRICS
from partgm.run.sampling import Draws, sample_run
from partgm.runs import prepare_data
from partgm.samplers import SamplingOptions

QUICKSTART_CONFIG = Path(__file__).parent / "configs" / "quickstart.yaml"


def quickstart(run_dir: Path, steps: int = 0, num_samples: int = 4) -> None:
    from partgm.engine import train
    from partgm.engine.metrics import read_metrics
    from partgm.run.checkpoint import list_checkpoints

    start = time.time()
    cfg = resolve_config(QUICKSTART_CONFIG)
    if steps:  # warmup, evaluation and saving intervals follow the budget (partgm train --steps N)
        cfg = resolve_config(QUICKSTART_CONFIG, [f"train.{k}={v}" for k, v in scaled_budget(cfg.train, steps).items()])
    cfg, data = prepare_data(cfg)
    checkpoints = list_checkpoints(run_dir) if run_dir.exists() else []
    if not checkpoints or int(checkpoints[-1].name.split("_")[-1]) < cfg.train.steps:
        train(cfg, data, run_dir, resume=bool(checkpoints))
    val_ppl = [r["val_ppl"] for r in read_metrics(run_dir / METRICS) if "val_ppl" in r][-1]
    draws = Draws(SamplingOptions(steps=64, nucleus=0.9), num_samples=num_samples, batch=num_samples)
    records = sample_run(run_dir, draws)
    print()
    for r in records:
        text = r["text"].replace("<|endoftext|>", "\n").strip()
        print(f"--- sample {r['index']} (PGM, 64 steps, nucleus 0.9) ---\n{text}\n")
    minutes = (time.time() - start) / 60
    print(f"validation PPL (EMA weights, NELBO bound, {cfg.train.eval_batches} batches): {val_ppl:.2f}")
    print(f"run saved in {run_dir.resolve()}  ({minutes:.1f} min)")
    print(f"next: partgm sample {run_dir} --prompt 'And God said'  |  partgm plot {run_dir}")
