"""FLOP accounting for the benchmark records: analytic FLOPs (``Sampler.flops``, ``partgm.models.flops``), achieved FLOP/s, the matmul
peak measured in the same invocation at the model's shapes, utilisation, and, for PGM, the FLOP-ceiling
speed-up over MDLM (the speed-up at equal efficiency) beside the measured one.

Shapes: M rows, K = H the hidden size, N = 4H (the MLP's first Linear, the largest matmul of a block).
"""

from __future__ import annotations

import time

import torch

from partgm.benchmarks.timing import synchronize
from partgm.models.flops import dit_forward_flops, partition_flops, partition_forward_flops, train_step_flops
from partgm.samplers import Sampler
from partgm.samplers.cost import Workload

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(rows: int, hidden: int, device: torch.device, dtype: str = "fp32", repeats: int = 3) -> dict:
    """The best FLOP/s of ``[rows, H] @ [H, 4H]`` (warm-up, then best of ``repeats``), the matmul shape of
    the model's MLP on ``rows`` tokens: the machine's attainable peak for that model, measured now."""
    torch_dtype = TORCH_DTYPES[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, hidden, device=device, generator=gen).to(torch_dtype)
    b = torch.randn(hidden, 4 * hidden, device=device, generator=gen).to(torch_dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    flops = 2 * rows * hidden * 4 * hidden
    return {"matmul_peak_flops_per_s": flops / best, "matmul_peak_shape": [rows, hidden, 4 * hidden],
            "matmul_peak_dtype": dtype}


def sample_flops(sampler: Sampler, work: Workload) -> dict:
    """Analytic FLOPs of one generation (``Sampler.flops``; binomial plans are expectations); {} for a
    sampler without a count."""
    cost = sampler.flops(work)
    if cost is None:
        return {}
    return {"flops": cost.flops.total, "flops_split": cost.flops.as_dict(), "forward_passes": cost.forward_passes,
            "softmax_elements": cost.softmax_elements, "flops_notes": cost.notes}


def expected_group1_share(schedule, n: int = 1000) -> float:
    """E_t[p (1 - p)] with p = 1 - alpha(t) and t uniform on the training range: the expected share of
    cross-group pairs (over 2) of a PGM training batch."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n * (1 - 1e-3) + 1e-3
    p = 1.0 - schedule.alpha(t)
    return float((p * (1 - p)).mean())


def train_flops(algo: str, layout: str, model_cfg, batch: int, length: int, vocab: int, schedule) -> dict:
    """Analytic FLOPs of one forward + backward (3 x the forward's matmuls). PGM: the attention pairs of
    the layout that ran (``dense``: L^2; ``padded``: 2 L^2; ``blocks`` / ``flex``: the expected n0^2 + n1^2
    and 2 n0 n1, flex's ideal tile skipping); MDLM / AR: dense (causal counted dense)."""
    if algo == "pgm":
        if layout in ("blocks", "flex"):
            cross = batch * 2 * length * (length - 1) * expected_group1_share(schedule)
            same = batch * length * length - cross
            forward = partition_flops(model_cfg, batch, length, length, same, cross, vocab)
        else:
            forward = partition_forward_flops(model_cfg, batch, length, vocab, "dense")
            if layout == "padded":
                forward.attention *= 2
    else:
        forward = dit_forward_flops(model_cfg, batch, length, vocab + 1 if algo == "mdlm" else vocab)
    step = train_step_flops(forward)
    return {"flops": step.total, "flops_split": step.as_dict()}


def efficiency(record: dict) -> dict:
    """achieved FLOP/s and utilisation of the measured peak, for a record with flops, latency and peak."""
    if not record.get("flops") or not record.get("latency_s_mean"):
        return {}
    achieved = record["flops"] / record["latency_s_mean"]
    peak = record.get("matmul_peak_flops_per_s")
    return {"achieved_flops_per_s": achieved, "utilisation": achieved / peak if peak else None}


def annotate_ratios(records: list[dict]) -> None:
    """To every PGM sampling record, add ``ratios`` {mdlm variant: {"measured", "flop_ceiling"}} against
    the MDLM records of the SAME run_id, batch, length and steps: measured = tokens/s ratio,
    flop_ceiling = MDLM FLOPs / PGM FLOPs (the speed-up at equal efficiency). Ratios never mix runs."""
    mdlm = {(r.get("run_id"), r["batch"], r["length"], r.get("steps"), r["variant"]): r
            for r in records if r.get("bench") == "sample" and r["algo"] == "mdlm"}
    for r in records:
        if r.get("bench") != "sample" or r["algo"] != "pgm":
            continue
        ratios = {}
        for variant in ("reference", "best"):
            m = mdlm.get((r.get("run_id"), r["batch"], r["length"], r.get("steps"), variant))
            if m is None:
                continue
            ceiling = m["flops"] / r["flops"] if m.get("flops") and r.get("flops") else None
            ratios[f"mdlm/{variant}"] = {"measured": r["tokens_per_s"] / m["tokens_per_s"], "flop_ceiling": ceiling}
        if ratios:
            r["ratios"] = ratios
