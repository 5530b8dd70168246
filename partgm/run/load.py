"""The one loader: a run directory, a pretrained directory or a Hub id -> a ``LoadedRun``."""

from __future__ import annotations

from pathlib import Path

from partgm.run.layout import CHECKPOINTS


def load_model(path: str | Path, weights: str = "ema", device: str = "cpu", revision: str | None = None):
    """A ``LoadedRun`` from a run directory (it has ``checkpoints/``; ``weights`` ema | raw: its latest
    checkpoint's), else from a pretrained directory or a Hub repository id (its weights are what was
    exported; ``revision``: a Hub branch or commit)."""
    if (Path(path) / CHECKPOINTS).is_dir():
        from partgm.run.checkpoint import load_run

        return load_run(Path(path), weights=weights, device=device)
    from partgm.run.pretrained import load_pretrained

    return load_pretrained(path, device, revision)
