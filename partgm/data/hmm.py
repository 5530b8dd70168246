"""A known distribution: a random hidden Markov model (or a class-conditional mixture of them) with exact
likelihoods and exact posterior marginals, in float64.

The process has C classes (C = 1: unconditional text), each an HMM over S hidden states emitting one of V
ids: ``initial`` [C, S], ``transition`` [C, S, S] (rows sum to 1), ``emission`` [C, S, V] and the class
prior ``class_prior`` [C]. Unconditioned on the class it is itself an HMM over C * S states with a
block-diagonal transition matrix, so one forward-backward serves both: a label restricts the initial
state to its class's block, the null label (``labels`` None or == C) weighs the blocks by the prior.

Shapes: B batch, n sequence length (HMM positions only, no BOS), C classes, S states, V ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from partgm.errors import PartgmError
from partgm.fileio import atomic_write

_KEYS = ("initial", "transition", "emission", "class_prior")


@dataclass
class HMMProcess:
    """The matrices as float64 tensors (shapes in the module docstring) and the parameters they came from."""

    initial: torch.Tensor
    transition: torch.Tensor
    emission: torch.Tensor
    class_prior: torch.Tensor
    params: dict

    @classmethod
    def random(cls, states: int, vocab: int, concentration: float = 0.1, seed: int = 0, classes: int = 1,
               emission_concentration: float | None = None) -> HMMProcess:
        """Dirichlet(``concentration``) rows: sparse, peaked transitions (the hidden state carries information
        over many positions) and emissions (``emission_concentration``, default ``concentration``).
        Deterministic from ``seed``; the class prior is uniform."""
        if states < 1 or vocab < 2 or classes < 1 or not concentration > 0:
            raise PartgmError(f"an HMM needs states >= 1, vocab >= 2, classes >= 1 and concentration > 0, got "
                              f"states={states}, vocab={vocab}, classes={classes}, concentration={concentration}")
        emission_concentration = emission_concentration or concentration
        rng = np.random.default_rng(seed)

        def rows(shape: tuple[int, ...], alpha: float) -> torch.Tensor:
            # gamma draws normalised: Dirichlet rows; a floor keeps every probability positive
            g = rng.gamma(alpha, size=shape) + 1e-12
            return torch.from_numpy(g / g.sum(-1, keepdims=True))

        params = {"states": states, "vocab": vocab, "concentration": concentration, "seed": seed,
                  "classes": classes, "emission_concentration": emission_concentration}
        return cls(rows((classes, states), 1.0), rows((classes, states, states), concentration),
                   rows((classes, states, vocab), emission_concentration),
                   torch.full((classes,), 1.0 / classes, dtype=torch.float64), params)

    @property
    def device(self) -> torch.device:
        return self.initial.device

    def to(self, device: str | torch.device) -> HMMProcess:
        """The same process with its matrices on ``device`` (itself when already there). The forward
        algorithm and forward-backward run where the matrices are; ``sample`` needs them on the CPU."""
        if torch.device(device) == self.device:
            return self
        return HMMProcess(*(getattr(self, k).to(device) for k in _KEYS), params=self.params)

    @property
    def num_classes(self) -> int:
        return self.initial.shape[0]

    @property
    def vocab(self) -> int:
        return self.emission.shape[-1]

    # --- files -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """A plain ``.npz``: initial, transition, emission, class_prior (float64) and params (JSON text)."""
        path = Path(path)
        arrays = {k: getattr(self, k).numpy() for k in _KEYS}
        atomic_write(path, lambda f: np.savez(f, params=np.array(json.dumps(self.params)), **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path) -> HMMProcess:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(np.asarray(z[k], dtype=np.float64)) for k in _KEYS}
                params = json.loads(str(z["params"])) if "params" in z else {}
        except (OSError, KeyError, ValueError) as exc:
            raise PartgmError(f"'{path}' is not an HMM process file ({type(exc).__name__}: {exc})") from None
        c, s = arrays["initial"].shape
        if arrays["transition"].shape != (c, s, s) or arrays["emission"].shape[:2] != (c, s) \
                or arrays["class_prior"].shape != (c,):
            raise PartgmError(f"'{path}': the matrices' shapes do not fit together")
        return cls(**arrays, params=params)

    # --- the process ------------------------------------------------------------------------------
    def start(self, batch: int, labels: torch.Tensor | None) -> torch.Tensor:
        """The initial state distribution [B, C, S]: a label's block, or the prior mixture (None / null)."""
        weight = self.class_prior.expand(batch, -1)
        if labels is not None:
            labels = labels.to(torch.long).to(self.device)
            one_hot = torch.nn.functional.one_hot(labels.clamp(max=self.num_classes - 1), self.num_classes).double()
            weight = torch.where((labels < self.num_classes)[:, None], one_hot, weight)
        return weight[:, :, None] * self.initial

    def sample(self, n: int, length: int, generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact draws: (tokens [n, length] long, labels [n] long: the classes drawn from the prior, or
        the given ``labels``)."""
        if labels is None:
            labels = torch.multinomial(self.class_prior, n, replacement=True, generator=generator)
        c = labels.to(torch.long).cpu()
        tokens = torch.empty(n, length, dtype=torch.long)
        state = _draw(self.initial[c], generator)
        for i in range(length):
            tokens[:, i] = _draw(self.emission[c, state], generator)
            if i + 1 < length:
                state = _draw(self.transition[c, state], generator)
        return tokens, c

    def _evidence(self, tokens: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """[n, C, B, S]: the emission probability of each visible token (0 for ids outside the vocabulary),
        1 at hidden positions (laid out for one batched matmul per position)."""
        inside = (tokens >= 0) & (tokens < self.vocab)
        e = self.emission[:, :, tokens.clamp(0, self.vocab - 1)].permute(3, 0, 2, 1)  # [n, C, B, S]
        keep = (visible & inside).T[:, None, :, None]
        return torch.where(visible.T[:, None, :, None], e * keep, torch.ones_like(e)).contiguous()

    def log_prob(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(tokens) [B] float64 (forward algorithm); -inf where a token is outside the vocabulary."""
        tokens = tokens.to(self.device)
        e = self._evidence(tokens, torch.ones_like(tokens, dtype=torch.bool))
        a = self.start(tokens.shape[0], labels).transpose(0, 1).contiguous()  # [C, B, S]
        total = torch.zeros(tokens.shape[0], dtype=torch.float64, device=self.device)
        for i in range(tokens.shape[1]):
            f = a * e[i]
            norm = f.sum(dim=(0, 2))
            total += norm.log()
            a = torch.bmm(f / norm.clamp(min=1e-300)[None, :, None], self.transition)
        return total

    def log_marginals(self, tokens: torch.Tensor, visible: torch.Tensor, labels: torch.Tensor | None = None,
                      positions: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n, V] float64: log p(x_l = v | the visible tokens other than l) at every position l
        (forward-backward; at hidden positions this is the posterior marginal given all visible ones);
        [B, K, V] at ``positions`` [B, K] only, when given (the emission product then costs K, not n)."""
        tokens, visible = tokens.to(self.device), visible.to(self.device).bool()
        batch, n = tokens.shape
        e = self._evidence(tokens, visible)
        a = self.start(batch, labels).transpose(0, 1)  # [C, B, S]
        a = (a / a.sum(dim=(0, 2), keepdim=True)).contiguous()
        forward = torch.empty(n, *a.shape, dtype=torch.float64, device=self.device)
        for i in range(n):  # forward[i]: p(z_i | visible before i), normalised
            forward[i] = a
            f = a * e[i]
            a = torch.bmm(f / f.sum(dim=(0, 2), keepdim=True).clamp(min=1e-300), self.transition)
        backward = torch.ones_like(forward)
        back_t = self.transition.transpose(1, 2)
        for i in range(n - 2, -1, -1):  # backward[i]: p(visible after i | z_i), up to a scale
            b = torch.bmm(e[i + 1] * backward[i + 1], back_t)
            backward[i] = b / b.amax(dim=(0, 2), keepdim=True).clamp(min=1e-300)
        weight = (forward * backward).permute(2, 0, 1, 3)  # [B, n, C, S]
        if positions is not None:
            index = positions.to(self.device).long()[..., None, None].expand(-1, -1, *weight.shape[2:])
            weight = weight.gather(1, index)
        probs = torch.einsum("blcs,csv->blv", weight, self.emission)
        return (probs / probs.sum(-1, keepdim=True)).clamp(min=1e-300).log()

    # --- exact statistics -------------------------------------------------------------------------
    def state_marginals(self, length: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """p(z_l) [n, C, S] of the unconditioned (or class-``labels[0]``) process at each position."""
        a = self.start(1, labels)[0]
        out = []
        for _ in range(length):
            out.append(a)
            a = torch.einsum("cs,cst->ct", a, self.transition)
        return torch.stack(out)

    def unigram(self, length: int) -> torch.Tensor:
        """[V]: the exact frequency of each id over positions 1..n of draws of length n."""
        return torch.einsum("lcs,csv->v", self.state_marginals(length), self.emission) / length

    def bigram(self, length: int) -> torch.Tensor:
        """[V, V]: the exact frequency of each pair (x_l, x_{l+1}) over the n - 1 pairs of a draw."""
        pi = self.state_marginals(length)[:-1].mean(0)  # [C, S]
        first = pi[:, :, None] * self.emission  # [C, S, V]: p(z_l = s, x_l = a)
        nxt = torch.einsum("cst,ctb->csb", self.transition, self.emission)  # p(x_{l+1} = b | z_l = s)
        return torch.einsum("csa,csb->ab", first, nxt)

    def summary(self) -> dict:
        return {**self.params, "classes": self.num_classes, "vocab": self.vocab,
                "states": int(self.initial.shape[1]), "max_entropy_per_token": math.log(self.vocab)}


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of probs [B, K] (inverse CDF)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp(max=probs.shape[-1] - 1)[:, 0]
