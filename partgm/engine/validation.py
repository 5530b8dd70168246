"""Validation NELBO / perplexity with its error bar, seeded per sequence, and the seeds and row reads that
training shares with it.

Every evaluation draw comes from (seed, row) alone, so the numbers do not depend on the batch size nor on
the number of processes, and two models scored with the same seed see the same draws (paired comparisons,
``partgm.evaluation.ppl``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from partgm.algorithms import Algorithm, Batch
from partgm.engine import distributed
from partgm.errors import PartgmError
from partgm.precision import autocast_for
from partgm.schedules import MIN_TRAIN_TIME

_NOISE, _MASK, _EVAL = 1, 2, 3  # streams derived from the run seed


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _rows(array: Any, index: np.ndarray | slice, device: torch.device) -> torch.Tensor:
    """Rows ``index`` of a [rows, L] uint16/uint32 array (or memmap) -> long tensor [rows, L]."""
    return torch.from_numpy(np.array(array[index], dtype=np.int64)).to(device)


def read_batch(tokens: Any, labels: Any | None, index: np.ndarray | slice, device: torch.device) -> Batch:
    """A ``Batch`` of rows ``index`` of a token array [rows, L] and, when given, a label array [rows]."""
    return Batch(_rows(tokens, index, device), None if labels is None else _rows(labels, index, device))


def eval_draws(seed: int, row: int, draws: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The evaluation randomness of sequence ``row`` of a split, from (seed, row) alone (so it does not
    depend on the batch size nor on the number of processes): ``draws`` stratified times
    ``u_k = (u + k) / K`` with one random offset u per sequence, mapped like training times (float32 [K]),
    and the uniforms that decide each draw's mask (float32 [K, length]). On the CPU."""
    gen = torch.Generator().manual_seed(derive_seed(seed, _EVAL, row))
    u = (torch.rand((), generator=gen, dtype=torch.float64) + torch.arange(draws, dtype=torch.float64)) / draws
    return ((1.0 - MIN_TRAIN_TIME) * u + MIN_TRAIN_TIME).float(), torch.rand(draws, length, generator=gen)


def ppl_summary(values: torch.Tensor, counts: torch.Tensor, exact: bool) -> dict[str, Any]:
    """Perplexity with its error bar from per-sequence NELBO sums ``values`` [N, K] (K draws each) over
    ``counts`` [N] scored tokens per sequence.

    ``nelbo`` = sum over sequences of the mean over draws / tokens; ``stderr`` its Monte-Carlo standard
    error: from the spread of each sequence's K draws when K >= 2 (conservative for stratified draws),
    from the spread between sequences when K = 1 (an upper bound: it also holds the data's own spread),
    0 for exact likelihoods. ``ppl_low`` / ``ppl_high``: the 95% interval ``exp(nelbo -+ 1.96 stderr)``.
    """
    n, k = values.shape
    tokens = int(counts.sum())
    nelbo = float(values.sum()) / (k * tokens)
    if exact:
        stderr, kind = 0.0, "exact"
    elif k >= 2:
        stderr, kind = math.sqrt(float(values.var(dim=1).sum()) / k) / tokens, "within-sequence"
    elif n >= 2:
        stderr, kind = math.sqrt(float(values[:, 0].var()) * n) / tokens, "between-sequence"
    else:
        stderr, kind = math.nan, "none"
    low = high = None
    if not math.isnan(stderr):
        low, high = math.exp(nelbo - 1.96 * stderr), math.exp(nelbo + 1.96 * stderr)
    return {"ppl": math.exp(nelbo), "nelbo": nelbo, "tokens": tokens, "sequences": n, "draws": k,
            "stderr": None if math.isnan(stderr) else stderr, "stderr_kind": kind, "ppl_low": low, "ppl_high": high}


def evaluate_ppl(
    algorithm: Algorithm,
    model: nn.Module,
    val_array: Any,
    batch_size: int,
    device: str | torch.device,
    seed: int = 0,
    max_batches: int = 0,
    precision: str = "fp32",
    val_labels: Any | None = None,
    draws: int = 1,
) -> dict[str, Any]:
    """Perplexity bound ``exp(sum NELBO / tokens)`` over the rows of ``val_array`` [rows, L] (and their
    ``val_labels`` [rows] for class-conditional data), with ``draws`` times and masks per sequence
    (``sequence_nelbos``). Returns ``ppl_summary``'s dict: ppl, nelbo, tokens, sequences, draws, stderr,
    ppl_low, ppl_high, ..."""
    values, counts = sequence_nelbos(algorithm, model, val_array, batch_size, device, seed, max_batches,
                                     precision, val_labels, draws)
    return ppl_summary(values, counts, algorithm.exact_likelihood)


@torch.no_grad()
def sequence_nelbos(
    algorithm: Algorithm,
    model: nn.Module,
    val_array: Any,
    batch_size: int,
    device: str | torch.device,
    seed: int = 0,
    max_batches: int = 0,
    precision: str = "fp32",
    val_labels: Any | None = None,
    draws: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence NELBO sums (float64 [N, K], CPU) and scored tokens (float64 [N]) over the rows of
    ``val_array``, with ``draws`` = K times and masks per sequence (``eval_draws``: seeded per sequence,
    so they do not depend on ``batch_size`` and two models given the same seed see the same draws).

    Batch b holds rows ``[b * batch_size, (b + 1) * batch_size)``. Under DDP rank r takes batches
    r, r + W, ... and the float64 per-sequence sums are all-reduced. ``max_batches`` 0: every row.
    """
    if batch_size < 1 or draws < 1 or max_batches < 0:
        raise PartgmError("evaluation needs batch size >= 1, draws >= 1 and max batches >= 0")
    device = torch.device(device)
    rank, world = distributed.rank_and_world()
    n = len(val_array)
    if n == 0:
        raise PartgmError("the evaluation split is empty")
    if max_batches > 0:
        n = min(n, max_batches * batch_size)
    draws = 1 if algorithm.exact_likelihood else draws
    values = torch.zeros(n, draws, dtype=torch.float64, device=device)  # per-sequence NELBO sums
    counts = torch.zeros(n, dtype=torch.float64, device=device)  # scored tokens per sequence
    was_training = model.training
    model.eval()
    n_batches = math.ceil(n / batch_size)
    lockstep = distributed.is_sharded(model)  # FSDP2: every rank runs as many forwards (collectives)
    for b in range(rank, math.ceil(n_batches / world) * world if lockstep else n_batches, world):
        filler = b >= n_batches  # a lockstep filler: computed, not counted
        rows = range(min(batch_size, n)) if filler else range(b * batch_size, min((b + 1) * batch_size, n))
        batch = read_batch(val_array, val_labels, slice(rows.start, rows.stop), device)
        times, uniforms = zip(*(eval_draws(seed, r, draws, batch.tokens.shape[1]) for r in rows))
        times, uniforms = torch.stack(times).to(device), torch.stack(uniforms).to(device)  # [B, K], [B, K, L]
        for k in range(draws):
            with autocast_for(device, precision):
                sums, per_sequence = algorithm.validation_terms(model, batch, times[:, k], uniforms[:, k])
            if not filler:
                values[rows.start : rows.stop, k] = sums.double()
        if not filler:
            counts[rows.start : rows.stop] = per_sequence
    model.train(was_training)
    return distributed.all_reduce_sum(values).cpu(), distributed.all_reduce_sum(counts).cpu()


def validation_record(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics.jsonl fields of an ``evaluate_ppl`` result: val_ppl, val_nelbo, val_tokens and the
    error bar (val_stderr, val_ppl_low, val_ppl_high, val_draws)."""
    keys = ("ppl", "nelbo", "tokens", "stderr", "ppl_low", "ppl_high", "draws")
    return {f"val_{k}": result[k] for k in keys}
