"""FSDP2 (``train.parallel=fsdp``: torch.distributed.fsdp.fully_shard) with gloo on 2 CPU processes
matches one process with the same global batch, and its checkpoints resume exactly.

Run as a script, this file is the torchrun worker: ``test_fsdp.py ROOT`` trains ROOT/fsdp (4 steps) and
ROOT/split (2 steps, then resumed to 4).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine import ToyAlgorithm, toy_cfg, toy_data

from partgm.config import RunConfig
from partgm.engine import load_run, train
from partgm.engine.metrics import read_metrics

STEPS = 4


def _cfg(steps: int = STEPS, parallel: str = "fsdp") -> RunConfig:
    cfg = toy_cfg(steps=steps, global_batch=8, micro_batch=2, eval_every=2, save_every=2)
    cfg.train.parallel = parallel
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)
def test_fsdp_matches_single_process_and_resumes_exactly(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2"]
    rendezvous = ["--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
    proc = subprocess.run([*torchrun, *rendezvous, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    algo = ToyAlgorithm(dropout=0.0)
    train(_cfg(parallel="ddp"), toy_data(), tmp_path / "single", algorithm=algo)
    fsdp, single = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("fsdp", "single"))
    assert [r["step"] for r in fsdp] == [r["step"] for r in single]
    for key in ("loss", "grad_norm", "val_ppl"):
        a, b = [r[key] for r in fsdp if key in r], [r[key] for r in single if key in r]
        assert a and a == pytest.approx(b, rel=1e-5), key
    for kind in ("raw", "ema"):
        full = load_run(tmp_path / "fsdp", weights=kind, algorithm=algo).model.state_dict()
        split = load_run(tmp_path / "split", weights=kind, algorithm=algo).model.state_dict()
        one = load_run(tmp_path / "single", weights=kind, algorithm=algo).model.state_dict()
        for k in full:
            assert torch.equal(full[k], split[k]), (kind, k)  # resumed: the same bits as straight through
            torch.testing.assert_close(full[k], one[k], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
    root, algo = Path(sys.argv[1]), ToyAlgorithm(dropout=0.0)
    train(_cfg(), toy_data(), root / "fsdp", algorithm=algo)
    train(_cfg(steps=2), toy_data(), root / "split", algorithm=algo)
    train(_cfg(), toy_data(), root / "split", resume=True, algorithm=algo)
