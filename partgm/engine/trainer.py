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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from partgm.algorithms import Algorithm, TokenSpace, build_algorithm
from partgm.config import RunConfig, to_dict
from partgm.engine import distributed
from partgm.engine.batches import GlobalBatchSampler, micro_slices
from partgm.engine.ema import EMA
from partgm.engine.memory import check_training_fits
from partgm.engine.metrics import MetricsLogger, Throughput, open_tracker
from partgm.engine.optim import build_optimizer, build_scheduler
from partgm.engine.validation import (  # noqa: F401  (eval_draws, ppl_summary, sequence_nelbos: re-exported)
    _MASK,
    _NOISE,
    derive_seed,
    eval_draws,
    evaluate_ppl,
    ppl_summary,
    read_batch,
    sequence_nelbos,
    validation_record,
)
from partgm.errors import PartgmError
from partgm.precision import autocast_for
from partgm.run.checkpoint import (
    CHECKPOINTS,
    check_state,
    list_checkpoints,
    load_intact_checkpoint,
    load_run,
    read_data_header,
    read_run_config,
    save_checkpoint,
    write_run_files,
)
from partgm.run.layout import METRICS
from partgm.run.lock import RunLock, remove_temporaries


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
    changed = [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if changed:
        raise PartgmError(f"cannot resume: model config changed ({', '.join(changed)})")


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


class Trainer:
    """One training run, in stages: ``build`` (algorithm, model, optimizer, EMA, samplers of batches and
    times), ``restore`` (from the run's latest checkpoint), ``train_step``, ``evaluate`` and ``save``;
    ``run`` drives them. The algorithm's hooks are called at their stages: ``draw_times`` per step,
    ``after_optimizer_step`` after each optimizer step, ``state_dict`` / ``load_state_dict`` with the
    training state, ``extra_metrics`` at each evaluation.

    ``data`` is a PreparedData: ``train`` / ``val`` arrays [rows, L], optional ``labels`` per split,
    ``vocab_size``, ``bos_id``, ``length``, ``path``, ``header``, ``tokenizer()``.
    """

    def __init__(self, cfg: RunConfig, data: Any, run_dir: Path, algorithm: Algorithm | None = None):
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        tc = cfg.train
        self.dist = distributed.init_distributed(tc.device)
        self.device = self.dist.device
        self.slices = micro_slices(tc.global_batch, self.dist.world_size, self.dist.rank, tc.micro_batch)
        self.rank_rows = slice(self.slices[0].start, self.slices[-1].stop)
        if data.length != cfg.data.length:
            raise PartgmError(
                f"the data has sequences of length {data.length}, the config data.length={cfg.data.length}"
            )
        self.algorithm = algorithm or build_algorithm(cfg, TokenSpace.from_header({**data.header, "path": None}))
        self.step, self.elapsed = 0, 0.0

    # --- stages ---------------------------------------------------------------------------------------
    def build(self) -> None:
        """Fresh model (or ``train.init_from``'s ``init_weights``), optimizer, scheduler, EMA, batch sampler and
        the stream of training times."""
        tc = self.cfg.train
        _seed_everything(tc.seed)
        shards = self.dist.world_size if tc.parallel == "fsdp" else 1
        check_training_fits(self.algorithm, self.cfg.model, torch.device(self.device), shards)
        self.model = self.algorithm.build_model(self.cfg.model).to(self.device)
        if tc.init_from:
            source = load_run(Path(tc.init_from), weights=tc.init_weights, device=self.device)
            check_state(self.model.state_dict(), source.model.state_dict())
            self.model.load_state_dict(source.model.state_dict())
        # FSDP2 shards the parameters in place: before the optimizer and the EMA are built on them
        self.net = distributed.parallelize(self.model, self.dist, tc.parallel)  # what the loss calls
        self.optimizer, self.ema = build_optimizer(self.model, tc), EMA(self.model, tc.ema_decay)
        self.scheduler = build_scheduler(self.optimizer, tc)
        self.batches = GlobalBatchSampler(len(self.data.train), tc.global_batch, tc.seed)
        # On the CPU, so that the training times do not depend on the device.
        self.noise = torch.Generator().manual_seed(derive_seed(tc.seed, _NOISE))
        self.mask_gen = torch.Generator(device=self.device)
        self.autocast = autocast_for(self.device, tc.precision)

    def restore(self) -> None:
        """Load the latest checkpoint of ``run_dir`` into the built objects."""
        _check_resumable(self.run_dir, self.cfg, self.data)
        checkpoint = load_intact_checkpoint(self.run_dir)
        state = checkpoint.training_state
        if "optimizer" not in state:
            raise PartgmError(
                f"cannot resume '{self.run_dir}': its checkpoint has weights but no training state (a converted "
                "or imported model); start a new run from it instead"
            )
        if checkpoint.skipped and self.dist.is_main:
            print(f"resuming from step {checkpoint.step} ({checkpoint.path.name}): skipped the damaged "
                  f"{'; '.join(checkpoint.skipped)}", file=sys.stderr)
        weights, ema_weights = checkpoint.weights, checkpoint.ema_weights
        check_state(self.model.state_dict(), weights)
        check_state(self.model.state_dict(), ema_weights)
        distributed.load_full_state(self.model, self.optimizer, self.ema.shadow, weights, ema_weights,
                                    state["optimizer"])
        self.ema.num_updates = int(state["ema_num_updates"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], self.noise, self.device)
        self.algorithm.load_state_dict(state.get("algorithm", {}))
        self.step, self.elapsed = state["step"], state["elapsed"]

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step over a global batch -> (summed micro-batch loss, grad norm, lr used)."""
        tc, step = self.cfg.train, self.step + 1
        index = next(self.batches)  # [global_batch]
        t = self.algorithm.draw_times(tc.global_batch, self.noise, self.device)  # [global_batch]
        rows = index[self.rank_rows]
        batch = read_batch(self.data.train, self.data.labels.get("train"), rows, self.device)  # [per_rank, L]
        loss_sum = torch.zeros((), device=self.device)
        for i, piece in enumerate(self.slices):
            self.mask_gen.manual_seed(derive_seed(tc.seed, _MASK, step, piece.start))
            local = slice(piece.start - self.rank_rows.start, piece.stop - self.rank_rows.start)
            with distributed.no_sync(self.net, i < len(self.slices) - 1):
                with self.autocast:
                    loss = self.algorithm.training_loss(self.net, batch[local], t[piece], self.mask_gen)
                    loss = loss / len(self.slices)
                loss.backward()
            loss_sum += loss.detach()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        grad_norm = distributed.full_tensor(grad_norm)  # FSDP2: a DTensor
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.step = step
        self.algorithm.after_optimizer_step(self, step)
        return loss_sum, grad_norm, lr

    def evaluate(self) -> dict[str, Any]:
        """Validation perplexity with the EMA weights (and the algorithm's extra metrics)."""
        tc = self.cfg.train
        eval_batch = self.slices[0].stop - self.slices[0].start  # per process, like a training micro-batch
        with self.ema.swapped(self.model):
            result = evaluate_ppl(
                self.algorithm, self.model, self.data.val, eval_batch, self.device, tc.seed, tc.eval_batches,
                tc.precision, self.data.labels.get("val"), tc.eval_draws,
            )
            extra = self.algorithm.extra_metrics(self.model, self)
            if distributed.is_sharded(self.model):
                self.model.reshard()  # FSDP2 keeps the root unsharded after a forward: back to the shards
        return {"step": self.step, **validation_record(result), **extra}

    def save(self, elapsed: float) -> None:
        """Checkpoint the weights, EMA and the whole training state (rank 0 writes; all ranks wait). With
        FSDP2 the states are gathered first (every rank takes part), so the checkpoint is the same as DDP's."""
        weights, ema_weights, optimizer_state = distributed.full_state(self.model, self.optimizer, self.ema.shadow)
        if self.dist.is_main:
            training_state = {
                "step": self.step,
                "elapsed": elapsed,
                "optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(),
                "sampler": self.batches.state_dict(),
                "ema_num_updates": self.ema.num_updates,
                "rng": _rng_state(self.noise, self.device),
                "algorithm": self.algorithm.state_dict(),
            }
            save_checkpoint(
                self.run_dir, self.step, weights, ema_weights,
                training_state, self.cfg.train.keep_last,
            )
        distributed.barrier()

    # --- the loop -------------------------------------------------------------------------------------
    def open_run_dir(self, resume: bool) -> bool:
        """Lock the run directory (rank 0), remove what killed runs left half-written, and decide whether
        to resume: a run with no checkpoint yet (killed before its first save) starts again from step 0."""
        if self.dist.is_main:
            self.lock = RunLock(self.run_dir)
            remove_temporaries(self.run_dir)
            remove_temporaries(self.run_dir / CHECKPOINTS)
        has_checkpoint = bool(list_checkpoints(self.run_dir))
        if not resume and has_checkpoint:
            raise PartgmError(f"run directory '{self.run_dir}' already holds checkpoints: pass --resume to continue "
                              "it, or pick another --run-dir")
        if resume and not has_checkpoint and self.dist.is_main:
            print(f"run directory '{self.run_dir}' has no checkpoint yet: starting from step 0", file=sys.stderr)
        return resume and has_checkpoint

    def run(self, resume: bool = False) -> dict[str, Any]:
        self.lock: RunLock | None = None
        try:
            return self._run(self.open_run_dir(resume))
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run(self, resume: bool) -> dict[str, Any]:
        tc, d = self.cfg.train, self.dist
        self.build()
        if resume:
            self.restore()
        if self.step >= tc.steps:
            if self.cfg.distill is not None:
                raise PartgmError(f"the distillation already ran its {self.step} steps (distill.rounds x "
                                  "distill.steps_per_round): raise distill.rounds to continue")
            raise PartgmError(f"the run is already at step {self.step}: raise train.steps above it to continue")
        logger: MetricsLogger | None = None
        if d.is_main:
            write_run_files(self.run_dir, self.cfg, self.data)
            tracker = open_tracker(tc.tracker, self.run_dir, to_dict(self.cfg))
            logger = MetricsLogger(self.run_dir / METRICS, self.step if resume else None, tracker)
            self.say(self.start_summary())
        distributed.barrier()

        tokens_per_step = tc.global_batch * self.cfg.data.length
        throughput, window_loss, window_steps = Throughput(), torch.zeros((), device=self.device), 0
        final: dict[str, Any] = {}
        t0 = time.perf_counter() - self.elapsed
        bar = tqdm(total=tc.steps, initial=self.step, disable=not (d.is_main and tc.progress), dynamic_ncols=True)
        self.model.train()
        while self.step < tc.steps:
            loss, grad_norm, lr = self.train_step()
            step = self.step
            window_loss += loss
            throughput.add(tokens_per_step)
            window_steps += 1
            bar.update(1)
            if _due(step, tc.log_every, tc.steps):
                mean_loss = distributed.all_reduce_sum(window_loss).item() / (d.world_size * window_steps)
                window_loss, window_steps = torch.zeros((), device=self.device), 0
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
            evaluated = _due(step, tc.eval_every, tc.steps) and len(self.data.val)
            if evaluated:
                with throughput.paused():
                    record = self.evaluate()
                final.update(record)
                if logger:
                    logger.log(record)
            if _due(step, tc.save_every, tc.steps):  # before the summary: nothing after it can lose the step
                with throughput.paused():
                    self.save(time.perf_counter() - t0)
            if evaluated and logger:
                self.say(self.eval_summary(final))
        bar.close()
        if logger:
            logger.close()
            self.say(self.end_summary(final, time.perf_counter() - t0))
        return final

    # --- what the run prints (rank 0) ------------------------------------------------------------------
    def say(self, line: str) -> None:
        """One line to stderr, above the progress bar (stdout stays for results)."""
        tqdm.write(line, file=sys.stderr)

    def start_summary(self) -> str:
        """Algorithm, parameters of the built model, device, precision, tokens per step, data size."""
        tc, length = self.cfg.train, self.cfg.data.length
        n_params = sum(p.numel() for p in self.model.parameters())
        with self.autocast:
            precision = "bf16 autocast" if torch.is_autocast_enabled(self.device.type) else "fp32"
        rows = {split: len(getattr(self.data, split)) for split in ("train", "val")}
        ranks = f" x {self.dist.world_size} processes" if self.dist.world_size > 1 else ""
        return (
            f"train {self.cfg.algo} ({self.cfg.preset or 'custom'}): {n_params / 1e6:.2f}M parameters, "
            f"device {self.device}{ranks}, {precision}, {tc.global_batch} x {length} = "
            f"{tc.global_batch * length:,} tokens/step, data {rows['train']:,} train rows "
            f"({rows['train'] * length:,} tokens, vocab {self.data.vocab_size:,}) + {rows['val']:,} "
            f"val rows, steps {self.step} -> {tc.steps}, run dir {self.run_dir}"
            + (f", {torch.get_num_threads()} CPU thread(s)" if self.device.type == "cpu" else "")
        )

    def eval_summary(self, final: dict[str, Any]) -> str:
        """Step, last logged train loss, validation perplexity, last logged tokens/s."""
        kind = "exact" if self.algorithm.exact_likelihood else "bound"
        loss = f"{final['loss']:.4f}" if "loss" in final else "-"
        speed = f"{final['tokens_per_s']:,.0f}" if "tokens_per_s" in final else "-"
        interval = ""
        if not self.algorithm.exact_likelihood and final.get("val_ppl_low") is not None:
            interval = f" [95%: {final['val_ppl_low']:.2f}-{final['val_ppl_high']:.2f}, {final['val_draws']} draw(s)]"
        elif not self.algorithm.exact_likelihood and "val_ppl" in final:
            interval = " [no error bar: one validation sequence, one draw]"
        return (f"step {final['step']}/{self.cfg.train.steps}: train loss {loss}, val PPL {final['val_ppl']:.2f}"
                f"{interval} ({kind}, EMA weights), {speed} tokens/s")

    def end_summary(self, final: dict[str, Any], elapsed: float) -> str:
        """Steps, time, final validation perplexity and where the checkpoint is."""
        ppl = f", final val PPL {final['val_ppl']:.2f}" if "val_ppl" in final else ""
        took = f"{elapsed:.1f} s" if elapsed < 120 else f"{elapsed / 60:.1f} min"
        return (f"done: {self.step} steps in {took}{ppl}; checkpoint "
                f"{self.run_dir / CHECKPOINTS / f'step_{self.step:08d}'}")


def train(
    cfg: RunConfig, data: Any, run_dir: Path, resume: bool = False, algorithm: Algorithm | None = None
) -> dict[str, Any]:
    """Train ``cfg.algo`` on ``data`` (a PreparedData), writing ``run_dir``.

    ``resume``: continue from the latest checkpoint of ``run_dir``. ``algorithm`` replaces the one
    named by ``cfg.algo``. Returns the final metrics: step, loss, val_ppl, val_nelbo, val_tokens, ...
    """
    owns_group = not torch.distributed.is_initialized()
    result = Trainer(cfg, data, Path(run_dir), algorithm).run(resume)
    if owns_group:  # not after a failure: a rank tearing down while its peers wait in a collective hangs them
        distributed.destroy_distributed()
    return result
