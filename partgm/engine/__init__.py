"""Training engine: the training loop, validation, EMA, optimizer, DDP / FSDP2. It writes into a run
directory through ``partgm.run`` (layout, checkpoints, lock)."""

from partgm.engine.trainer import train
from partgm.engine.validation import evaluate_ppl

__all__ = ["evaluate_ppl", "train"]
