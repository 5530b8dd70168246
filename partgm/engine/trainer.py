"""The training loop: one process or DDP under torchrun, gradient accumulation, EMA, exact resume.

Per optimizer step every rank draws the same global batch of row indices and the same training
times ``t [global_batch]``; rank r takes its contiguous block of rows, split into micro-batches.
Mask randomness comes from a generator re-seeded per micro-batch from (seed, step, first global row),
so it needs no saved state and matches between a DDP run and a single process with the same
micro-batches.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from partgm.algorithms import Algorithm, get_algorithm
from partgm.config import RunConfig, to_dict
from partgm.engine import distributed
from partgm.engine.batches import GlobalBatchSampler, micro_slices
from partgm.engine.checkpoint import (
    CHECKPOINTS,
    WEIGHT_FILES,
    check_state,
    latest_checkpoint,
    load_tensors,
    load_training_state,
    load_weights,
    read_data_header,
    read_run_config,
    save_checkpoint,
    write_run_files,
)
from partgm.engine.ema import EMA
from partgm.engine.metrics import MetricsLogger, Throughput
from partgm.engine.optim import build_optimizer, build_scheduler
from partgm.errors import PartgmError
from partgm.schedules import antithetic_times

_NOISE, _MASK, _EVAL = 1, 2, 3  # streams derived from the run seed


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _rows(array: Any, index: np.ndarray | slice, device: torch.device) -> torch.Tensor:
    """Rows ``index`` of a [rows, L] uint16/uint32 array (or memmap) -> long tensor [rows, L]."""
    return torch.from_numpy(np.asarray(array[index], dtype=np.int64)).to(device)


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def evaluate_ppl(
    algorithm: Algorithm,
    model: nn.Module,
    val_array: Any,
    batch_size: int,
    device: str | torch.device,
    seed: int = 0,
    max_batches: int = 0,
    precision: str = "fp32",
) -> dict[str, float]:
    """Perplexity bound ``exp(sum NELBO / tokens)`` over the rows of ``val_array`` [rows, L].

    Batch b holds rows ``[b * batch_size, (b + 1) * batch_size)``, with stratified times
    ``antithetic_times(batch)`` and masks from generators seeded by (seed, b). Under DDP rank r takes
    batches r, r + W, ... and the float64 sums are all-reduced, so the result does not depend on the
    number of processes. ``max_batches`` 0: every row. Returns ``{"ppl", "nelbo", "tokens"}``.
    """
    device = torch.device(device)
    rank, world = distributed.rank_and_world()
    n = len(val_array)
    if n == 0:
        raise PartgmError("the evaluation split is empty")
    n_batches = math.ceil(n / batch_size)
    if max_batches > 0:
        n_batches = min(n_batches, max_batches)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # NELBO sum, token count
    time_gen, mask_gen = torch.Generator(), torch.Generator(device=device)
    was_training = model.training
    model.eval()
    for b in range(rank, n_batches, world):
        x = _rows(val_array, slice(b * batch_size, (b + 1) * batch_size), device)  # [B, L]
        t = antithetic_times(len(x), time_gen.manual_seed(derive_seed(seed, _EVAL, b)), device)
        mask_gen.manual_seed(derive_seed(seed, _EVAL, b, _MASK))
        with _autocast(device, precision):
            nelbo, count = algorithm.validation_nelbo(model, x, t, mask_gen)
        sums[0] += nelbo.double()
        sums[1] += count
    model.train(was_training)
    total, tokens = distributed.all_reduce_sum(sums).tolist()
    nelbo = total / tokens
    return {"ppl": math.exp(nelbo), "nelbo": nelbo, "tokens": int(tokens)}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also every CUDA device


def _rng_state(noise: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Global RNG states (identical on every rank: all ranks draw the same shapes) and the noise stream."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    state = {
        "torch": torch.get_rng_state(),
        "noise": noise.get_state(),
        "numpy": np_state,
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], noise: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    noise.set_state(state["noise"])
    np_state = state["numpy"]
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable(run_dir: Path, cfg: RunConfig, data: Any) -> None:
    """The saved run must describe the same network: algorithm, model section, length and vocabulary."""

    def shape(c: RunConfig) -> dict[str, Any]:
        return {
            "algo": c.algo,
            **{f"model.{k}": v for k, v in to_dict(c.model).items()},
            "data.length": c.data.length,
        }

    old, new = shape(read_run_config(run_dir)), shape(cfg)
    old["data.vocab_size"], new["data.vocab_size"] = read_data_header(run_dir)["vocab_size"], data.vocab_size
    changed = [f"{k} {old[k]} -> {new[k]}" for k in old if old[k] != new[k]]
    if changed:
        raise PartgmError(f"cannot resume: model config changed ({', '.join(changed)})")


def _restore(
    run_dir: Path,
    cfg: RunConfig,
    data: Any,
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    sampler: GlobalBatchSampler,
    noise: torch.Generator,
    device: torch.device,
) -> tuple[int, float]:
    """Load the latest checkpoint into the freshly built training objects; returns (step, elapsed s)."""
    _check_resumable(run_dir, cfg, data)
    checkpoint = latest_checkpoint(run_dir)
    state = load_training_state(checkpoint)
    if "optimizer" not in state:
        raise PartgmError(
            f"cannot resume '{run_dir}': its checkpoint has weights but no training state (a converted or "
            "imported model); start a new run from it instead"
        )
    load_weights(model, checkpoint / WEIGHT_FILES["raw"])
    ema_weights = load_tensors(checkpoint / WEIGHT_FILES["ema"])
    check_state(model.state_dict(), ema_weights)
    ema.load_state_dict({"num_updates": state["ema_num_updates"], "shadow": ema_weights})
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    sampler.load_state_dict(state["sampler"])
    _set_rng_state(state["rng"], noise, device)
    return state["step"], state["elapsed"]


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def train(
    cfg: RunConfig, data: Any, run_dir: Path, resume: bool = False, algorithm: Algorithm | None = None
) -> dict[str, Any]:
    """Train ``cfg.algo`` on ``data`` (a PreparedData: ``train``/``val`` arrays [rows, L], ``vocab_size``,
    ``bos_id``, ``eos_id``, ``length``, ``path``, ``header``, ``tokenizer()``), writing ``run_dir``.

    ``resume``: continue from the latest checkpoint of ``run_dir``. ``algorithm`` replaces the one
    named by ``cfg.algo``. Returns the final metrics: step, loss, val_ppl, val_nelbo, val_tokens, ...
    """
    owns_group = not torch.distributed.is_initialized()
    try:
        return _train(cfg, data, Path(run_dir), resume, algorithm)
    finally:
        if owns_group:
            distributed.destroy_distributed()


def _train(
    cfg: RunConfig, data: Any, run_dir: Path, resume: bool, algorithm: Algorithm | None
) -> dict[str, Any]:
    tc = cfg.train
    d = distributed.init_distributed(tc.device)
    slices = micro_slices(tc.global_batch, d.world_size, d.rank, tc.micro_batch)
    rank_rows = slice(slices[0].start, slices[-1].stop)
    if data.length != cfg.data.length:
        raise PartgmError(
            f"the data has sequences of length {data.length}, the config data.length={cfg.data.length}"
        )
    if not resume and (run_dir / CHECKPOINTS / "latest").exists():
        raise PartgmError(f"run directory '{run_dir}' already holds checkpoints: resume it or pick another")

    _seed_everything(tc.seed)
    algorithm = algorithm or get_algorithm(cfg.algo, data.vocab_size, data.bos_id, tc.noise_schedule)
    model = algorithm.build_model(cfg.model, cfg.data.length).to(d.device)
    optimizer, ema = build_optimizer(model, tc), EMA(model, tc.ema_decay)
    scheduler = build_scheduler(optimizer, tc)
    sampler = GlobalBatchSampler(len(data.train), tc.global_batch, tc.seed)
    # On the CPU, so that the training times do not depend on the device.
    noise = torch.Generator().manual_seed(derive_seed(tc.seed, _NOISE))
    start, elapsed = 0, 0.0
    if resume:
        start, elapsed = _restore(
            run_dir, cfg, data, model, ema, optimizer, scheduler, sampler, noise, d.device
        )
    if start >= tc.steps:
        raise PartgmError(f"the run is already at step {start}: raise train.steps above it to continue")

    logger: MetricsLogger | None = None
    if d.is_main:
        write_run_files(run_dir, cfg, data)
        logger = MetricsLogger(run_dir / "metrics.jsonl", resume_step=start if resume else None)
    distributed.barrier()

    net = distributed.parallelize(model, d)  # what the loss calls; `model` stays the plain module
    autocast = _autocast(d.device, tc.precision)
    mask_gen = torch.Generator(device=d.device)
    tokens_per_step = tc.global_batch * cfg.data.length
    eval_batch = slices[0].stop - slices[0].start  # per process, like a training micro-batch
    throughput, window_loss, window_steps = Throughput(), torch.zeros((), device=d.device), 0
    final: dict[str, Any] = {}
    t0 = time.perf_counter() - elapsed
    bar = tqdm(total=tc.steps, initial=start, disable=not (d.is_main and tc.progress), dynamic_ncols=True)
    model.train()
    for step in range(start + 1, tc.steps + 1):
        index = next(sampler)  # [global_batch]
        t = antithetic_times(tc.global_batch, noise, d.device)  # [global_batch]
        x = _rows(data.train, index[rank_rows], d.device)  # [per_rank, L]
        for i, piece in enumerate(slices):
            mask_gen.manual_seed(derive_seed(tc.seed, _MASK, step, piece.start))
            local = slice(piece.start - rank_rows.start, piece.stop - rank_rows.start)
            with distributed.no_sync(net, i < len(slices) - 1):
                with autocast:
                    loss = algorithm.training_loss(net, x[local], t[piece], mask_gen) / len(slices)
                loss.backward()
            window_loss += loss.detach()
        grad_norm = nn.utils.clip_grad_norm_(
            model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf
        )
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        throughput.add(tokens_per_step)
        window_steps += 1
        bar.update(1)

        if _due(step, tc.log_every, tc.steps):
            mean_loss = distributed.all_reduce_sum(window_loss).item() / (d.world_size * window_steps)
            window_loss, window_steps = torch.zeros((), device=d.device), 0
            record = {
                "step": step,
                "loss": mean_loss,
                "lr": lr,
                "grad_norm": grad_norm.item(),
                "tokens_per_s": throughput.rate(),
                "elapsed": time.perf_counter() - t0,
            }
            final.update(record)
            bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if logger:
                logger.log(record)
        if _due(step, tc.eval_every, tc.steps) and len(data.val):
            with throughput.paused(), ema.swapped(model):
                result = evaluate_ppl(
                    algorithm, model, data.val, eval_batch, d.device, tc.seed, tc.eval_batches, tc.precision
                )
            record = {
                "step": step,
                "val_ppl": result["ppl"],
                "val_nelbo": result["nelbo"],
                "val_tokens": result["tokens"],
            }
            final.update(record)
            if logger:
                logger.log(record)
        if _due(step, tc.save_every, tc.steps):
            with throughput.paused():
                if d.is_main:
                    training_state = {
                        "step": step,
                        "elapsed": time.perf_counter() - t0,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "sampler": sampler.state_dict(),
                        "ema_num_updates": ema.num_updates,
                        "rng": _rng_state(noise, d.device),
                    }
                    save_checkpoint(
                        run_dir,
                        step,
                        model.state_dict(),
                        ema.model_state_dict(model),
                        training_state,
                        tc.keep_last,
                    )
                distributed.barrier()
    bar.close()
    return final
