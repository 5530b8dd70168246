"""Training engine: the training loop, checkpoints and run directories, EMA, optimizer, DDP."""

from partgm.engine.checkpoint import LoadedRun, load_run
from partgm.engine.trainer import evaluate_ppl, train

__all__ = ["LoadedRun", "evaluate_ppl", "load_run", "train"]
