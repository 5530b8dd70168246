"""Training algorithms, looked up by name in ``ALGORITHMS`` (open to outside code: see ``partgm.registry``)."""

from __future__ import annotations

from partgm.algorithms.ar import AutoregressiveAlgorithm
from partgm.algorithms.base import Algorithm, Batch, Context, TokenSpace
from partgm.algorithms.maskgit import MaskGITAlgorithm
from partgm.algorithms.mdlm import ComplementaryMDLMAlgorithm, MDLMAlgorithm
from partgm.algorithms.pgm import PGMAlgorithm
from partgm.algorithms.pgm_image import PGMImageAlgorithm
from partgm.config import RunConfig
from partgm.registry import Registry

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", "partgm.algorithms")
for _cls in (PGMAlgorithm, MDLMAlgorithm, ComplementaryMDLMAlgorithm, AutoregressiveAlgorithm, MaskGITAlgorithm,
             PGMImageAlgorithm):
    ALGORITHMS.register(_cls.name, _cls)


def register_algorithm(cls: type[Algorithm], replace: bool = False) -> type[Algorithm]:
    """Register an ``Algorithm`` subclass under its ``name`` (usable as a class decorator)."""
    ALGORITHMS.register(cls.name, cls, replace=replace)
    return cls


def build_algorithm(cfg: RunConfig, space: TokenSpace) -> Algorithm:
    """The algorithm ``cfg.algo`` for data described by ``space``."""
    return ALGORITHMS.get(cfg.algo).from_config(cfg, space)


def get_algorithm(
    name: str, vocab_size: int, bos_id: int | None, noise_schedule: str = "loglinear", length: int = 0, **space: int
) -> Algorithm:
    """Shorthand for tests and scripts: algorithm ``name`` for N ids and sequences of ``length``."""
    return ALGORITHMS.get(name)(TokenSpace(vocab_size, length, bos_id, **space), noise_schedule)


__all__ = [
    "ALGORITHMS", "Algorithm", "Batch", "Context", "TokenSpace", "build_algorithm", "get_algorithm",
    "register_algorithm",
]
