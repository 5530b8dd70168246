"""Validation perplexity of a run, records named by their parameters, and the paired comparison of two runs.

Two runs scored with the same ``seed`` see the same times and masks for each sequence (``eval_draws`` is
seeded by (seed, row)), so the difference of their NELBOs is estimated far more tightly than each NELBO:
``compare_ppl`` gives that difference with its 95% interval, which decides "A vs B" when the two separate
perplexity intervals overlap.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from partgm.errors import PartgmError


def load_scoring(path: str | Path, split: str, data: str | Path | None, weights: str, device: str):
    """(loaded run, its PreparedData, the split's rows [N, L], their labels [N] or None), checked to fit."""
    from partgm.data import PreparedData
    from partgm.run.checkpoint import load_run

    if split not in ("val", "train"):
        raise PartgmError(f"split must be val or train, not '{split}'")
    run = load_run(Path(path), weights=weights, device=device)
    data_path = data or run.data_header.get("path")
    if not data_path:
        raise PartgmError(f"run directory '{path}' records no prepared data: pass --data DIR")
    prepared = PreparedData.load(data_path)
    if prepared.vocab_size != run.algorithm.vocab_size:
        raise PartgmError(
            f"data vocab {prepared.vocab_size} does not match the checkpoint's {run.algorithm.vocab_size}"
        )
    if prepared.length != run.cfg.data.length:
        raise PartgmError(f"data '{data_path}' has sequences of length {prepared.length}, the model was trained "
                          f"on {run.cfg.data.length}: prepare the data with data.length={run.cfg.data.length}")
    rows = prepared.val if split == "val" else prepared.train
    return run, prepared, rows, prepared.labels.get(split)


def ppl_record_name(result: dict[str, Any], own_data: bool, max_batches: int = 0) -> str:
    """``ppl-SPLIT[-DATANAME]-stepS-dK-sSEED[-raw][-bN].json``: every parameter that changes the number is in
    the name, so an evaluation with other draws, seed, weights or data never replaces another's record."""
    data = "" if own_data else f"-{Path(result['data']).name}"
    raw = "-raw" if result.get("weights") == "raw" else ""
    batches = f"-b{max_batches}" if max_batches else ""
    return (f"ppl-{result['split']}{data}-step{result['step']}-d{result['draws']}-s{result['seed']}{raw}"
            f"{batches}.json")


def paired_difference(
    values_a: torch.Tensor, counts_a: torch.Tensor, values_b: torch.Tensor, counts_b: torch.Tensor
) -> dict[str, Any]:
    """NELBO(A) - NELBO(B) in nats/token from per-sequence sums ``values`` [N, K] (K = 1 for an exact
    likelihood) over ``counts`` [N] tokens, the same N sequences and (for K >= 2) the same draws k.

    ``stderr``: Monte-Carlo, from the spread over draws of each sequence's paired difference when K >= 2
    (the error bar of ``ppl_summary``, for this evaluation set), else from the spread between sequences;
    ``stderr_between_sequence`` (N >= 2) also holds the data's own spread (the error for another sample of
    sequences). ``low`` / ``high``: the 95% interval ``diff -+ 1.96 stderr``."""
    if values_a.shape[0] != values_b.shape[0]:
        raise PartgmError(f"the runs were scored on {values_a.shape[0]} and {values_b.shape[0]} sequences")
    d = values_a.double() / float(counts_a.sum()) - values_b.double() / float(counts_b.sum())  # [N, K']
    n, k = d.shape
    diff = float(d.mean(dim=1).sum())
    between = math.sqrt(float((n * d.mean(dim=1)).var()) / n) if n >= 2 else None
    if k >= 2:
        stderr, kind = math.sqrt(float(d.var(dim=1).sum()) / k), "within-sequence"
    else:
        stderr, kind = between, "between-sequence" if between is not None else "none"
    low, high = (diff - 1.96 * stderr, diff + 1.96 * stderr) if stderr is not None else (None, None)
    verdict = ("undecided: the interval contains 0" if low is None or low <= 0 <= high
               else "A lower (better)" if high < 0 else "B lower (better)")
    return {"nelbo_diff": diff, "stderr": stderr, "stderr_kind": kind, "stderr_between_sequence": between,
            "low": low, "high": high, "ppl_ratio": math.exp(diff),
            "ppl_ratio_low": None if low is None else math.exp(low),
            "ppl_ratio_high": None if high is None else math.exp(high),
            "sequences": n, "draws": k, "verdict": verdict}


def compare_ppl(
    run_a: str | Path, run_b: str | Path, *, split: str = "val", data: str | Path | None = None, batch: int = 16,
    max_batches: int = 0, seed: int = 0, weights: str = "ema", device: str = "cpu", draws: int = 1,
) -> dict[str, Any]:
    """Score two runs on the same sequences with the same draws (``data``, default A's prepared data) and
    return each one's ``ppl_summary`` (``a``, ``b``) with ``paired_difference`` (A - B)."""
    from partgm.devices import resolve_device
    from partgm.engine.validation import ppl_summary, sequence_nelbos

    device = str(resolve_device(device))
    first = load_scoring(run_a, split, data, weights, device)
    data = data or str(first[1].path)
    scored, sides = [], {}
    for name, path, (run, prepared, rows, labels) in (("a", run_a, first),
                                                      ("b", run_b, load_scoring(run_b, split, data, weights, device))):
        values, counts = sequence_nelbos(run.algorithm, run.model, rows, batch, device, seed, max_batches,
                                         val_labels=labels, draws=draws)
        scored.append((values, counts))
        sides[name] = {"run_dir": str(path), "algo": run.cfg.algo, "step": run.step,
                       **ppl_summary(values, counts, run.algorithm.exact_likelihood)}
    note = {} if torch.equal(scored[0][1], scored[1][1]) else {"note": (
        f"the runs score {sides['a']['tokens']} and {sides['b']['tokens']} tokens of the same sequences (e.g. AR "
        "does not score BOS): each NELBO is per its own tokens, as eval ppl reports it")}
    return {"split": split, "data": str(data), "seed": seed, "weights": weights, **sides,
            **paired_difference(scored[0][0], scored[0][1], scored[1][0], scored[1][1]), **note}


def compare_line(result: dict[str, Any]) -> str:
    """One human line: both PPLs and the paired difference with its interval and verdict."""
    def side(s: dict[str, Any]) -> str:
        interval = f" ({s['ppl_low']:.2f}-{s['ppl_high']:.2f})" if s.get("ppl_low") is not None else ""
        return f"{s['run_dir']} ({s['algo']}) PPL {s['ppl']:.2f}{interval}"

    interval = (f", 95% {result['low']:+.4f} to {result['high']:+.4f}" if result["low"] is not None
                else ", no interval (one sequence, one draw)")
    return (f"A {side(result['a'])} vs B {side(result['b'])}: NELBO A - B {result['nelbo_diff']:+.4f} nats/token"
            f"{interval} (paired, {result['draws']} draw(s) x {result['sequences']} sequences; PPL ratio "
            f"{result['ppl_ratio']:.4f}): {result['verdict']}")
