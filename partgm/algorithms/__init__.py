"""Training algorithms, looked up by name."""

from __future__ import annotations

from partgm.algorithms.base import Algorithm
from partgm.errors import PartgmError
from partgm.schedules import get_schedule


def get_algorithm(name: str, vocab_size: int, bos_id: int, noise_schedule: str = "loglinear") -> Algorithm:
    """The algorithm ``name`` (mdlm | mdlm-complement | pgm | ar) for a vocabulary of N real ids."""
    from partgm.algorithms.ar import AutoregressiveAlgorithm
    from partgm.algorithms.mdlm import ComplementaryMDLMAlgorithm, MDLMAlgorithm
    from partgm.algorithms.pgm import PGMAlgorithm

    registry = {
        "mdlm": MDLMAlgorithm,
        "mdlm-complement": ComplementaryMDLMAlgorithm,
        "pgm": PGMAlgorithm,
        "ar": AutoregressiveAlgorithm,
    }
    if name not in registry:
        raise PartgmError(f"unknown algorithm '{name}' (choose from {', '.join(registry)})")
    return registry[name](vocab_size=vocab_size, bos_id=bos_id, schedule=get_schedule(noise_schedule))


__all__ = ["Algorithm", "get_algorithm"]
