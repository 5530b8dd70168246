"""partgm: Partition Generative Models and their masked baselines.

The Python API (imported on first use, so ``import partgm`` stays light):

- ``partgm.load(path)`` / ``partgm.from_pretrained(path)``: a ``partgm.Model`` from a run directory, a
  pretrained directory or a Hub id; ``model.generate_text(...)``, ``model.score(...)``;
- ``partgm.train(config, run_dir=..., **overrides)``: train and return the ``Model``;
- ``partgm.evaluate_ppl(run_dir)``: validation perplexity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {"Model": "Model", "load": "load", "from_pretrained": "load", "train": "train", "evaluate_ppl": "evaluate_ppl"}

if TYPE_CHECKING:
    from partgm.api import Model, evaluate_ppl, load, train
    from partgm.api import load as from_pretrained


def __getattr__(name: str) -> Any:
    if name in _API:
        from partgm import api

        return getattr(api, _API[name])
    raise AttributeError(f"module 'partgm' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["Model", "__version__", "evaluate_ppl", "from_pretrained", "load", "train"]
