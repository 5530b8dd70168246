"""How many CPU threads torch uses: ``--threads N`` on every command, or a default that does not
oversubscribe a shared machine.

torch's own default is one thread per core, whatever else runs: on 2 cores shared with other jobs a tiny
model took 5.4 s/step that way and 1.5 s/step with ``OMP_NUM_THREADS=1`` (issue 24). The default here is
the cores this process may run on (its CPU affinity) minus the machine's 1-minute load average, at least 1;
``OMP_NUM_THREADS``, when set, wins. Inter-op threads (torch's pool for independent ops, little used by
partgm) get the same number. On a GPU the count only matters for data loading and the CPU fallback.
The thread count can change the last bits of float sums: give ``--threads`` for bitwise-reproducible
runs (a resumed run then matches an uninterrupted one whatever the machine's load).
"""

from __future__ import annotations

import os

from partgm.errors import PartgmError


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else the available CPUs minus the 1-minute load
    average (the other jobs' demand), at least 1."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cpus = available_cpus()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        load = 0.0
    return max(1, min(cpus, int(cpus - load + 0.5)))


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads for torch's intra-op (and, if not yet started, inter-op) pools; None: the default.
    Returns the number set."""
    import torch

    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PartgmError(f"threads={n!r} must be a positive integer")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only possible before the first inter-op work, once per process
        pass
    return n
