"""A small classifier of 8x8 digit token grids, and the "FID-digits" metric built on its features.

FID-digits is the Frechet distance between this classifier's penultimate features of generated and of
real digits. It is a cheap sanity metric for the digits demo, NOT ImageNet FID: values are comparable
only between runs that use the same classifier file and the same reference tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from partgm.errors import PartgmError
from partgm.fileio import atomic_write_bytes
from partgm.images.digits import DIGITS_LEVELS
from partgm.images.fid import feature_statistics, frechet_distance, frechet_distance_ci95


class DigitsClassifier(nn.Module):
    """MLP over scaled grey levels: tokens ``[B, 64]`` -> logits ``[B, n_classes]``."""

    def __init__(
        self, levels: int = DIGITS_LEVELS, hidden: int = 256, feature_dim: int = 64, n_classes: int = 10
    ) -> None:
        super().__init__()
        self.config = {"levels": levels, "hidden": hidden, "feature_dim": feature_dim, "n_classes": n_classes}
        self.body = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, feature_dim), nn.ReLU()
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[B, 64]`` (any integer dtype) -> penultimate features ``[B, feature_dim]``."""
        return self.body(tokens.float() / (self.config["levels"] - 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x).long()


def train_digits_classifier(
    tokens: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    steps: int = 200,
    seed: int = 0,
    levels: int = DIGITS_LEVELS,
) -> DigitsClassifier:
    """Full-batch AdamW on ``tokens`` ``[N, 64]`` and ``labels`` ``[N]``; returns the model in eval mode."""
    torch.manual_seed(seed)
    x, y = _as_tensor(tokens), _as_tensor(labels)
    model = DigitsClassifier(levels=levels)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def features(model: DigitsClassifier, tokens: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Penultimate features ``[N, feature_dim]`` of token grids ``[N, 64]``."""
    return model.eval().features(_as_tensor(tokens))


@torch.no_grad()
def class_accuracy(
    model: DigitsClassifier, tokens: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor
) -> float:
    """Fraction of ``tokens`` ``[N, 64]`` classified as ``labels`` ``[N]``."""
    return (model.eval()(_as_tensor(tokens)).argmax(-1) == _as_tensor(labels)).float().mean().item()


def digits_fid(
    model: DigitsClassifier, gen_tokens: np.ndarray | torch.Tensor, ref_tokens: np.ndarray | torch.Tensor
) -> float:
    """FID-digits: Frechet distance between the classifier features of generated and reference token grids
    ``[N, 64]``. Not ImageNet FID (see the module docstring)."""
    return frechet_distance(
        *feature_statistics(features(model, gen_tokens)), *feature_statistics(features(model, ref_tokens))
    )


def digits_fid_interval(
    model: DigitsClassifier, gen_tokens: np.ndarray | torch.Tensor, ref_tokens: np.ndarray | torch.Tensor,
    draws: int = 200, seed: int = 0,
) -> dict[str, float]:
    """{"value": FID-digits, "ci95": its bootstrap half-width over the generated samples}
    (``frechet_distance_ci95``: sampling noise only)."""
    gen = features(model, gen_tokens)
    mu_ref, sigma_ref = feature_statistics(features(model, ref_tokens))
    return {"value": frechet_distance(*feature_statistics(gen), mu_ref, sigma_ref),
            "ci95": frechet_distance_ci95(gen, mu_ref, sigma_ref, draws, seed)}


def class_accuracy_ci95(accuracy: float, n: int) -> float:
    """Half-width of the normal 95% interval of a fraction measured on n samples."""
    return 1.96 * (accuracy * (1.0 - accuracy) / max(n, 1)) ** 0.5


def save_digits_classifier(model: DigitsClassifier, path: str | Path) -> None:
    """One safetensors file; the config travels in its metadata. Written atomically."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(
        Path(path), safetensors.torch.save(state, metadata={"config": json.dumps(model.config)})
    )


def load_digits_classifier(path: str | Path) -> DigitsClassifier:
    """Load a classifier written by ``save_digits_classifier``, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"digits classifier {path} does not exist")
    try:
        with safetensors.safe_open(path, "pt") as f:
            config = json.loads((f.metadata() or {})["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
        model = DigitsClassifier(**config)
        model.load_state_dict(state)
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError, RuntimeError) as e:
        raise PartgmError(f"corrupt digits classifier {path}: {str(e).splitlines()[0]}") from None
    return model.eval()
