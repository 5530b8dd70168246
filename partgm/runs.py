"""Library entry points that work on configs: prepare a config's data. (Sampling from a trained run:
``partgm.run.sampling``.)"""

from __future__ import annotations

from typing import Any

from partgm.config import RunConfig


def prepare_data(cfg: RunConfig, progress: bool = True) -> Any:
    """The prepared dataset of ``cfg.data`` (built, or reused when its inputs are unchanged)."""
    from partgm.data import prepare_dataset
    from partgm.data.images import image_length, is_image_data, prepare_image_dataset

    d = cfg.data
    if is_image_data(d.corpus, d.tokenizer):  # the source fixes the length of a grid (digits: 64)
        d.length = image_length(d.corpus, d.length)
        return prepare_image_dataset(
            d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress
        )
    return prepare_dataset(
        d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress
    )
