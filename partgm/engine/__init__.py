"""Training engine: the training loop, checkpoints and run directories, EMA, optimizer, DDP."""

from partgm.engine.checkpoint import LoadedRun, load_run
from partgm.engine.trainer import train
from partgm.engine.validation import evaluate_ppl

__all__ = ["LoadedRun", "evaluate_ppl", "load_run", "train"]
