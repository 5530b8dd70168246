"""DDP with gloo on 2 CPU processes (torchrun) matches one process with the same global batch.

Run as a script, this file is the torchrun worker: ``test_ddp.py RUN_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import needs_gloo, run_torchrun
from toy_algorithm import ToyAlgorithm, toy_cfg, toy_data

from partgm.config import RunConfig
from partgm.engine import train
from partgm.engine.metrics import read_metrics
from partgm.run.checkpoint import load_run

STEPS = 4


def _cfg() -> RunConfig:
    # Global batch 8 in micro-batches of 2: 2 ranks x 2 accumulation steps (DDP no_sync), or one
    # process with 4. No dropout: it draws from the global RNG, which the layouts consume differently.
    return toy_cfg(steps=STEPS, global_batch=8, micro_batch=2, eval_every=2, save_every=STEPS)


@pytest.mark.slow
@needs_gloo
def test_ddp_matches_single_process(tmp_path: Path) -> None:
    run_torchrun(__file__, str(tmp_path / "ddp"), timeout=120)

    algo = ToyAlgorithm(dropout=0.0)
    train(_cfg(), toy_data(), tmp_path / "single", algorithm=algo)
    ddp, single = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("ddp", "single"))
    assert [r["step"] for r in ddp] == [r["step"] for r in single]  # rank 0 alone writes the log
    # Masks are seeded per micro-batch by its first global row, so they match only if each rank
    # really trained its own half of the global batch.
    for key in ("loss", "grad_norm", "val_ppl"):
        a, b = [r[key] for r in ddp if key in r], [r[key] for r in single if key in r]
        assert a and a == pytest.approx(b, rel=1e-5), key
    for kind in ("raw", "ema"):
        a = load_run(tmp_path / "ddp", weights=kind, algorithm=algo).model.state_dict()
        b = load_run(tmp_path / "single", weights=kind, algorithm=algo).model.state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    train(_cfg(), toy_data(), Path(sys.argv[1]), algorithm=ToyAlgorithm(dropout=0.0))
