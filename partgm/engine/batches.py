"""Deterministic global batches: every rank draws the same row indices and takes its own slice."""

from __future__ import annotations

import numpy as np

from partgm.errors import PartgmError


class GlobalBatchSampler:
    """Endless batches of ``global_batch`` row indices from ``range(num_rows)``.

    Each epoch is a fresh permutation from ``numpy.random.default_rng((seed, epoch))``; a batch that
    runs past the end of an epoch continues into the next one. ``(epoch, position)`` is the whole
    state, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
    """

    def __init__(self, num_rows: int, global_batch: int, seed: int):
        if num_rows < 1:
            raise PartgmError("the training split is empty")
        self.num_rows = num_rows
        self.global_batch = global_batch
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(self.num_rows)

    def __iter__(self) -> GlobalBatchSampler:
        return self

    def __next__(self) -> np.ndarray:
        """Row indices [global_batch] (int64)."""
        parts, need = [], self.global_batch
        while need:
            take = min(need, self.num_rows - self.position)
            parts.append(self._perm[self.position : self.position + take])
            self.position += take
            need -= take
            if self.position == self.num_rows:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
        return np.concatenate(parts)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)


def micro_slices(global_batch: int, world_size: int, rank: int, micro_batch: int) -> list[slice]:
    """Slices of the global batch that ``rank`` processes, one per gradient-accumulation micro-step.

    The rank owns the contiguous block ``[rank * P, (rank + 1) * P)`` with ``P = global_batch /
    world_size``, cut into pieces of ``micro_batch`` rows (0: one piece).
    """
    if global_batch % world_size:
        raise PartgmError(f"train.global_batch={global_batch} is not divisible by the {world_size} processes")
    per_rank = global_batch // world_size
    micro = micro_batch or per_rank
    if per_rank % micro:
        raise PartgmError(
            f"train.micro_batch={micro} does not divide the per-process batch {per_rank} "
            f"(train.global_batch={global_batch} over {world_size} processes)"
        )
    start = rank * per_rank
    return [slice(start + i, start + i + micro) for i in range(0, per_rank, micro)]
