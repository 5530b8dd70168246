"""The metrics log (``RUN/metrics.jsonl``) and throughput measurement."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


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
