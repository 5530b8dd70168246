"""A toy algorithm (embedding -> dropout -> linear, masked cross-entropy) and its data, shared by the
engine's single-process, DDP and FSDP tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partgm.algorithms import TokenSpace
from partgm.algorithms.base import Algorithm
from partgm.config import RunConfig, TrainConfig
from partgm.models.config import DiTConfig, ModelConfig
from partgm.schedules import get_schedule

VOCAB, LENGTH = 32, 16


class ToyModel(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size + 1, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, L] -> logits [B, L, V]."""
        return self.out(self.drop(self.embed(z)))


class ToyAlgorithm(Algorithm):
    """Masks each token w.p. t (the mask id is V) and scores the masked ones, weighted by 1 / t.
    ``random_masks=False``: masks are a fixed function of t, independent of how a batch is split."""

    name = "toy"

    def __init__(self, dropout: float = 0.1, random_masks: bool = True):
        super().__init__(TokenSpace(VOCAB, LENGTH, 0), get_schedule("loglinear"))
        self.dropout, self.random_masks = dropout, random_masks

    def build_model(self, model_cfg: ModelConfig) -> nn.Module:
        return ToyModel(self.vocab_size, model_cfg.hidden_size, self.dropout)

    def _terms(self, model, x, t, generator=None, uniforms=None):
        if uniforms is not None:
            u = uniforms
        elif self.random_masks:
            u = torch.rand(x.shape, generator=generator, device=x.device)
        else:
            u = torch.frac(torch.arange(x.shape[1], device=x.device) * 0.618 + 7.3 * t[:, None])
        masked = u < t[:, None]
        nll = F.cross_entropy(
            model(torch.where(masked, self.vocab_size, x)).transpose(1, 2), x, reduction="none"
        )
        return nll * masked / t[:, None]

    def training_loss(self, model, batch, t, generator=None):
        return self._terms(model, batch.tokens, t, generator).mean()

    def validation_terms(self, model, batch, t, uniforms):
        return self._terms(model, batch.tokens, t, uniforms=uniforms).double().sum(dim=1), batch.tokens.shape[1]


@dataclasses.dataclass
class ToyData:
    """Stand-in for PreparedData."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int = VOCAB
    bos_id: int = 0
    eos_id: int = 1
    length: int = LENGTH
    path: str = "toy-data"
    header: dict = dataclasses.field(default_factory=lambda: {"vocab_size": VOCAB, "length": LENGTH, "bos_id": 0})
    labels: dict = dataclasses.field(default_factory=dict)

    def tokenizer(self):
        return None


def toy_data(rows: int = 40, val_rows: int = 12, seed: int = 0) -> ToyData:
    rng = np.random.default_rng(seed)
    train_rows = rng.integers(2, VOCAB, (rows, LENGTH), dtype=np.uint16)
    val = rng.integers(2, VOCAB, (val_rows, LENGTH), dtype=np.uint16)
    train_rows[:, 0] = val[:, 0] = 0
    return ToyData(train_rows, val)


def toy_cfg(**train: object) -> RunConfig:
    tc = {
        "steps": 8,
        "global_batch": 8,
        "lr": 1e-2,
        "warmup_steps": 2,
        "ema_decay": 0.9,
        "device": "cpu",
        "log_every": 1,
        "eval_every": 4,
        "eval_batches": 0,
        "save_every": 4,
        "keep_last": 2,
        "progress": False,
    }
    tc.update(train)
    return RunConfig(
        algo="mdlm",
        model=DiTConfig(hidden_size=16, n_heads=2),
        train=dataclasses.replace(TrainConfig(), **tc),
        data=dataclasses.replace(RunConfig().data, length=LENGTH),
    )
