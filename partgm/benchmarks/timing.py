"""Timing utilities shared by the sampling and training benchmarks."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
import uuid
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> dict:
    """Latency of ``fn`` (seconds): ``warmup`` untimed calls, then ``repeats`` timed ones."""
    return time_interleaved({"fn": fn}, device, warmup, repeats)["fn"]


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, dict]:
    """Latency of each function, measured round-robin (A B A B ...) so that drift of the machine
    (thermal state, allocator, other load) affects every function alike. ``warmup`` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    synchronize(device)
    latencies: dict[str, list[float]] = {name: [] for name in fns}
    peak: dict[str, int | None] = dict.fromkeys(fns)
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            latencies[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = max(peak[name] or 0, torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        name: {
            "latency_s_mean": statistics.fmean(values),
            "latency_s_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "repeats": repeats,
            "warmup": warmup,
            "peak_mem_bytes": peak[name],
            "process_max_rss_bytes": rss,
        }
        for name, values in latencies.items()
    }


def network_time_share(fn: Callable[[], object], model: torch.nn.Module, device: torch.device) -> float:
    """Fraction of one call of ``fn`` spent inside the model's forward passes (``forward`` and, for the
    Partition Transformer, ``forward_packed``); ``1 -`` it is the sampler's own overhead."""
    spent = 0.0
    originals = {name: getattr(model, name) for name in ("forward", "forward_packed") if hasattr(model, name)}

    def timed(original):
        def call(*args, **kwargs):
            nonlocal spent
            synchronize(device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize(device)
            spent += time.perf_counter() - start
            return out

        return call

    for name, original in originals.items():
        setattr(model, name, timed(original))
    try:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        total = time.perf_counter() - start
    finally:
        for name in originals:
            delattr(model, name)
    return spent / total


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


RUN_ID = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"  # one per invocation


def machine_load() -> dict:
    """``uptime``'s load averages (1, 5, 15 min) and the CPU count: numbers measured while the load
    exceeds the cores are contaminated by other processes."""
    one, five, fifteen = os.getloadavg()
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "cpu_count": os.cpu_count()}


def environment(device: torch.device, dtype: str) -> dict:
    """Fields every benchmark record carries: ``run_id`` (shared by the records of one invocation: ratios
    are quoted only within one), the CPU or GPU model, dtype, torch version, threads, and the load."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "run_id": RUN_ID,
        "device": f"{device.type}: {name}",
        "cpu": _cpu_name(),
        "dtype": dtype,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **machine_load(),
    }
