"""FSDP2 (``train.parallel=fsdp``: torch.distributed.fsdp.fully_shard) with gloo on 2 CPU processes
matches one process with the same global batch, and its checkpoints resume exactly.

Run as a script, this file is the torchrun worker: ``test_fsdp.py ROOT`` trains ROOT/fsdp (4 steps) and
ROOT/split (2 steps, then resumed to 4), and checks a sharded Partition Transformer's loss and gradients
against the unsharded model (ROOT/partition-fsdp.txt).
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


def _cfg(steps: int = STEPS, parallel: str = "fsdp") -> RunConfig:
    cfg = toy_cfg(steps=steps, global_batch=8, micro_batch=2, eval_every=2, save_every=2)
    cfg.train.parallel = parallel
    return cfg


@pytest.mark.slow
@needs_gloo
def test_fsdp_matches_single_process_and_resumes_exactly(tmp_path: Path) -> None:
    run_torchrun(__file__, str(tmp_path), timeout=600)

    algo = ToyAlgorithm(dropout=0.0)
    train(_cfg(parallel="ddp"), toy_data(), tmp_path / "single", algorithm=algo)
    fsdp, single = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("fsdp", "single"))
    assert [r["step"] for r in fsdp] == [r["step"] for r in single]
    for key in ("loss", "grad_norm", "val_ppl"):
        a, b = [r[key] for r in fsdp if key in r], [r[key] for r in single if key in r]
        assert a and a == pytest.approx(b, rel=1e-5), key
    assert (tmp_path / "partition-fsdp.txt").read_text() == "ok"
    for kind in ("raw", "ema"):
        full = load_run(tmp_path / "fsdp", weights=kind, algorithm=algo).model.state_dict()
        split = load_run(tmp_path / "split", weights=kind, algorithm=algo).model.state_dict()
        one = load_run(tmp_path / "single", weights=kind, algorithm=algo).model.state_dict()
        for k in full:
            assert torch.equal(full[k], split[k]), (kind, k)  # resumed: the same bits as straight through
            torch.testing.assert_close(full[k], one[k], rtol=1e-5, atol=1e-6)


def _partition_transformer_check(root: Path) -> None:
    """Every block sharded (its adaLN and decoder K/V computed inside its own forward): the same loss and
    gradients as the unsharded model."""
    import copy

    from partgm.algorithms import get_algorithm
    from partgm.engine import distributed
    from partgm.models.config import PartitionConfig

    d = distributed.init_distributed("cpu")
    algorithm = get_algorithm("pgm", 30, 29, "loglinear", length=24)
    cfg = PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=2, n_decoder_blocks=2, cond_dim=16,
                          dropout=0.0, attention_layout="padded", swap_query_mode="learn+freqs+mean")
    torch.manual_seed(0)
    model = algorithm.build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    reference = copy.deepcopy(model)
    distributed.parallelize(model, d, "fsdp")
    gen = torch.Generator().manual_seed(1)
    x, groups = torch.randint(0, 30, (3, 24), generator=gen), torch.randint(0, 2, (3, 24), generator=gen)
    loss, ref_loss = model(x, groups).square().mean(), reference(x, groups).square().mean()
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    for (name, p), r in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(distributed.full_tensor(p.grad), r.grad, atol=1e-6, rtol=1e-5, msg=name)
    if d.is_main:
        (root / "partition-fsdp.txt").write_text("ok")


if __name__ == "__main__":
    from partgm.engine import distributed

    distributed.init_distributed("cpu")  # one process group for every run (no re-initialisation between them)
    root, algo = Path(sys.argv[1]), ToyAlgorithm(dropout=0.0)
    train(_cfg(), toy_data(), root / "fsdp", algorithm=algo)
    train(_cfg(steps=2), toy_data(), root / "split", algorithm=algo)
    train(_cfg(), toy_data(), root / "split", resume=True, algorithm=algo)
    _partition_transformer_check(root)
    distributed.destroy_distributed()
