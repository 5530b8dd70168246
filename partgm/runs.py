"""Library entry points that work on configs: prepare a config's data. (Sampling from a trained run:
``partgm.run.sampling``.)"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from partgm.config import RunConfig


def prepare_data(cfg: RunConfig, progress: bool = True) -> tuple[RunConfig, Any]:
    """(the config, the prepared dataset of its ``data`` section: built, or reused when its inputs are
    unchanged). The config is ``cfg`` itself, or a new one where the source fixes the length (an image
    grid: digits 64); ``cfg`` is never changed."""
    from partgm.data import prepare_dataset
    from partgm.data.images import image_length, is_image_data, prepare_image_dataset

    d = cfg.data
    if is_image_data(d.corpus, d.tokenizer):
        d = replace(d, length=image_length(d.corpus, d.length))
        data = prepare_image_dataset(
            d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress
        )
        return replace(cfg, data=d), data
    return cfg, prepare_dataset(
        d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress,
        split_documents=d.split_documents,
    )
