"""Training engine: exact resume, gradient accumulation, atomic checkpoints, errors, EMA, LR.

A toy algorithm (embedding -> dropout -> linear, masked cross-entropy) keeps these tests independent
of the real models; one test trains the real MDLM with the cpu-tiny preset.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from toy_algorithm import LENGTH, VOCAB, ToyAlgorithm, toy_cfg, toy_data

TIMING = ("elapsed", "tokens_per_s")

from partgm.algorithms.base import Algorithm
from partgm.config import TrainConfig, to_dict
from partgm.engine import evaluate_ppl, train
from partgm.engine.batches import GlobalBatchSampler, micro_slices
from partgm.engine.ema import EMA, ema_decay
from partgm.engine.metrics import read_metrics
from partgm.engine.optim import lr_factor
from partgm.errors import PartgmError
from partgm.models.config import ModelConfig
from partgm.resolve import resolve_config
from partgm.run.checkpoint import list_checkpoints, load_run, read_run_config


def weights(run_dir: Path, kind: str, algo: Algorithm | None = None) -> dict[str, torch.Tensor]:
    return load_run(run_dir, weights=kind, algorithm=algo or ToyAlgorithm()).model.state_dict()


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def test_exact_resume_is_bitwise(tmp_path: Path) -> None:
    data = toy_data()
    train(toy_cfg(steps=8), data, tmp_path / "full", algorithm=ToyAlgorithm())
    train(toy_cfg(steps=4), data, tmp_path / "split", algorithm=ToyAlgorithm())
    (tmp_path / "split" / "metrics.jsonl").open("a").write(
        '{"step": 5, "loss": 9.9}\n'
    )  # logged, then a crash
    final = train(toy_cfg(steps=8), data, tmp_path / "split", resume=True, algorithm=ToyAlgorithm())
    for kind in ("raw", "ema"):
        a, b = weights(tmp_path / "full", kind), weights(tmp_path / "split", kind)
        assert all(torch.equal(a[k], b[k]) for k in a), kind
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert without_timing(full) == without_timing(read_metrics(tmp_path / "split" / "metrics.jsonl"))
    assert [r["step"] for r in full if "loss" in r] == list(range(1, 9))
    assert [r["step"] for r in full if "val_ppl" in r] == [4, 8]
    assert final["step"] == 8 and final["val_ppl"] == full[-1]["val_ppl"]
    assert load_run(tmp_path / "split", algorithm=ToyAlgorithm()).step == 8


def test_gradient_accumulation_matches(tmp_path: Path) -> None:
    data, algo = toy_data(), ToyAlgorithm(dropout=0.0, random_masks=False)
    train(toy_cfg(steps=4, micro_batch=0), data, tmp_path / "whole", algorithm=algo)
    train(toy_cfg(steps=4, micro_batch=2), data, tmp_path / "micro", algorithm=algo)
    a, b = weights(tmp_path / "whole", "raw", algo), weights(tmp_path / "micro", "raw", algo)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    la = [r["loss"] for r in read_metrics(tmp_path / "whole" / "metrics.jsonl") if "loss" in r]
    lb = [r["loss"] for r in read_metrics(tmp_path / "micro" / "metrics.jsonl") if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)


def test_run_dir_layout_and_keep_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(toy_cfg(steps=8, save_every=2, keep_last=2), toy_data(), run, algorithm=ToyAlgorithm())
    assert read_run_config(run) == toy_cfg(steps=8, save_every=2, keep_last=2)
    assert json.loads((run / "data.json").read_text())["path"] == "toy-data"
    assert [p.name for p in list_checkpoints(run)] == ["step_00000006", "step_00000008"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000008"
    names = {p.name for p in (run / "checkpoints" / "step_00000008").iterdir()}
    assert names == {"model.safetensors", "ema.safetensors", "training_state.pt", "meta.json"}
    assert not [p for p in run.rglob("*") if "tmp" in p.name]


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, data = tmp_path / "run", toy_data()
    train(toy_cfg(steps=4, save_every=2), data, run, algorithm=ToyAlgorithm())
    before = weights(run, "raw")

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(torch, "save", crash)
        with pytest.raises(PartgmError, match="disk full"):
            train(toy_cfg(steps=6, save_every=2), data, run, resume=True, algorithm=ToyAlgorithm())
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002", "step_00000004"]
    assert not list((run / "checkpoints").glob(".tmp-*"))  # the torn checkpoint is removed at once
    after = load_run(run, weights="raw", algorithm=ToyAlgorithm())
    assert after.step == 4 and all(torch.equal(before[k], v) for k, v in after.model.state_dict().items())
    train(toy_cfg(steps=6, save_every=2), data, run, resume=True, algorithm=ToyAlgorithm())
    assert [p.name for p in list_checkpoints(run)] == ["step_00000004", "step_00000006"]
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_run_errors(tmp_path: Path) -> None:
    with pytest.raises(PartgmError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(PartgmError, match="not a run directory"):
        load_run(tmp_path)
    run, data = tmp_path / "run", toy_data()
    train(toy_cfg(steps=2, save_every=2), data, run, algorithm=ToyAlgorithm())

    with pytest.raises(PartgmError, match="already holds checkpoints"):
        train(toy_cfg(steps=2), data, run, algorithm=ToyAlgorithm())
    with pytest.raises(PartgmError, match="already at step 2"):
        train(toy_cfg(steps=2), data, run, resume=True, algorithm=ToyAlgorithm())
    bigger = toy_cfg(steps=4)
    bigger.model.hidden_size = 32
    with pytest.raises(
        PartgmError, match=r"cannot resume: model config changed \(model.hidden_size 16 -> 32\)"
    ):
        train(bigger, data, run, resume=True, algorithm=ToyAlgorithm())

    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "model": to_dict(bigger.model)}))
    with pytest.raises(
        PartgmError, match="checkpoint does not match the model config: embed.weight has shape"
    ):
        load_run(run, algorithm=ToyAlgorithm())
    (run / "config.json").write_text(json.dumps(cfg))

    ckpt = run / "checkpoints" / "step_00000002"
    state = (ckpt / "training_state.pt").read_bytes()
    (ckpt / "training_state.pt").write_bytes(state[: len(state) // 2])
    with pytest.raises(PartgmError, match="training_state.pt' is truncated or corrupt"):
        train(toy_cfg(steps=4), data, run, resume=True, algorithm=ToyAlgorithm())
    model_bytes = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(model_bytes[: len(model_bytes) // 2])
    with pytest.raises(PartgmError, match="model.safetensors' is truncated or corrupt"):
        load_run(run, weights="raw", algorithm=ToyAlgorithm())

    (run / "checkpoints" / "latest").write_text("step_00000099\n")
    with pytest.raises(PartgmError, match="step_00000099', which does not exist"):
        load_run(run, algorithm=ToyAlgorithm())
    (run / "checkpoints" / "latest").unlink()
    with pytest.raises(PartgmError, match="has no checkpoint"):
        load_run(run, algorithm=ToyAlgorithm())


def test_batch_divisibility_errors(tmp_path: Path) -> None:
    with pytest.raises(PartgmError, match="micro_batch=3 does not divide"):
        train(toy_cfg(micro_batch=3), toy_data(), tmp_path / "run", algorithm=ToyAlgorithm())
    with pytest.raises(PartgmError, match="global_batch=8 is not divisible by the 3 processes"):
        micro_slices(8, 3, 0, 0)
    assert micro_slices(8, 2, 1, 2) == [slice(4, 6), slice(6, 8)]


def test_global_batch_sampler_epochs_and_resume() -> None:
    sampler = GlobalBatchSampler(10, 4, seed=3)
    batches = [next(sampler) for _ in range(5)]  # 20 rows: exactly two epochs
    assert sorted(np.concatenate(batches[:2] + [batches[2][:2]])) == list(range(10))
    assert sorted(np.concatenate([batches[2][2:]] + batches[3:])) == list(range(10))
    again = GlobalBatchSampler(10, 4, seed=3)
    next(again)
    resumed = GlobalBatchSampler(10, 4, seed=3)
    resumed.load_state_dict(again.state_dict())
    assert all(np.array_equal(next(resumed), b) for b in batches[1:])


def test_ema_warmup() -> None:
    assert ema_decay(0.9999, 0) == pytest.approx(0.1)
    assert ema_decay(0.9999, 10) == pytest.approx(11 / 20)
    assert ema_decay(0.9, 10**6) == 0.9
    model = nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.9999)
    old = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * old + 0.9 * (old + 1.0))
    with ema.swapped(model):
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
    torch.testing.assert_close(model.weight, old + 1.0)


def test_lr_schedule() -> None:
    tc = dataclasses.replace(TrainConfig(), steps=100, warmup_steps=4, lr_schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(s, tc) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lr_factor(52, tc) == pytest.approx(0.55)
    assert lr_factor(100, tc) == pytest.approx(0.1) and lr_factor(200, tc) == pytest.approx(0.1)
    constant = dataclasses.replace(tc, lr_schedule="constant")
    assert lr_factor(1, constant) == 0.5 and lr_factor(99, constant) == 1.0


def test_evaluate_ppl_is_deterministic() -> None:
    algo, data = ToyAlgorithm(), toy_data(val_rows=10)
    model = algo.build_model(ModelConfig(hidden_size=16, n_heads=2))
    a = evaluate_ppl(algo, model, data.val, batch_size=4, device="cpu", seed=1)
    assert a == evaluate_ppl(algo, model, data.val, batch_size=4, device="cpu", seed=1)
    assert a["tokens"] == 10 * LENGTH and math.isclose(a["ppl"], math.exp(a["nelbo"]))
    assert evaluate_ppl(algo, model, data.val, 4, "cpu", seed=1, max_batches=2)["tokens"] == 8 * LENGTH
    assert model.training


def test_real_mdlm_cpu_tiny(tmp_path: Path) -> None:
    cfg = resolve_config(
        overrides=[
            "algo=mdlm",
            "preset=cpu-tiny",
            f"data.length={LENGTH}",
            "train.steps=3",
            "train.global_batch=4",
            "train.eval_every=3",
            "train.eval_batches=1",
            "train.progress=false",
            "train.device=cpu",
        ]
    )
    final = train(cfg, toy_data(), tmp_path / "run")
    assert final["step"] == 3 and math.isfinite(final["loss"]) and final["val_ppl"] > 1
    run = load_run(tmp_path / "run")
    assert run.algorithm.name == "mdlm" and run.step == 3 and run.tokenizer is None
    assert run.model(torch.zeros(1, LENGTH, dtype=torch.long)).shape[-1] == VOCAB + 1
