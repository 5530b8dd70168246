"""The metrics log (``RUN/metrics.jsonl``), optional experiment trackers fed the same records, and
throughput measurement."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError, unknown_choice
from partgm.fileio import atomic_write_text, read_jsonl


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file; a torn line (a crash mid-write) and a record without an integer
    ``step`` are skipped."""
    records = read_jsonl(path, "metrics file", skip_invalid=True)
    return [r for _, r in records if isinstance(r, dict) and type(r.get("step")) is int]


class MetricsLogger:
    """Appends one JSON object per line (each carrying a ``step``), flushed at once.

    ``resume_step``: keep the records up to that step and drop later ones (written after the
    checkpoint the run resumes from), so the log reads as one uninterrupted run. None: start afresh.

    ``tracker``: an experiment tracker (``open_tracker``) that receives every record too.
    """

    def __init__(self, path: Path, resume_step: int | None = None, tracker: Tracker | None = None):
        self.path, self.tracker = Path(path), tracker
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker:
            self.tracker.log(record)

    def close(self) -> None:
        if self.tracker:
            self.tracker.close()


TRACKERS = ("none", "wandb", "tensorboard")


class Tracker:
    """An experiment tracker: ``log`` gets each metrics.jsonl record (its numbers are logged at its step)."""

    def log(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _numbers(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class WandbTracker(Tracker):
    """Weights & Biases: one run named after the run directory, files under it; ``WANDB_PROJECT`` (default
    ``partgm``), ``WANDB_MODE=offline`` and the other ``WANDB_*`` variables work as usual."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        import wandb

        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "partgm"), name=Path(run_dir).name,
                               dir=str(run_dir), config=config)

    def log(self, record: dict[str, Any]) -> None:
        self._run.log(_numbers(record), step=int(record["step"]))

    def close(self) -> None:
        self._run.finish()


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self._writer.add_text("config", f"```\n{json.dumps(config, indent=2)}\n```")

    def log(self, record: dict[str, Any]) -> None:
        for key, value in _numbers(record).items():
            self._writer.add_scalar(key, value, int(record["step"]))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def open_tracker(name: str, run_dir: Path, config: dict[str, Any]) -> Tracker | None:
    """The tracker ``name`` (``none``: None); a missing package is a one-line error naming the extra."""
    if name == "none":
        return None
    kinds = {"wandb": (WandbTracker, "wandb"), "tensorboard": (TensorBoardTracker, "tensorboard")}
    if name not in kinds:
        raise unknown_choice("tracker", name, TRACKERS)
    cls, extra = kinds[name]
    try:
        return cls(run_dir, config)
    except ImportError as exc:
        raise PartgmError(f"train.tracker={name} needs the {exc.name or name} package: pip install 'partgm[{extra}]'") from None


class Throughput:
    """Tokens per second between ``rate()`` calls, not counting time spent in ``paused()`` blocks."""

    def __init__(self) -> None:
        self._tokens = 0
        self._seconds = 0.0
        self._since = time.perf_counter()

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    @contextmanager
    def paused(self) -> Iterator[None]:
        self._seconds += time.perf_counter() - self._since
        try:
            yield
        finally:
            self._since = time.perf_counter()

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self._tokens / max(self._seconds + now - self._since, 1e-9)
        self._tokens, self._seconds, self._since = 0, 0.0, now
        return rate
