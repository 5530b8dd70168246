"""GroupSwap's helpers: the other group's summary of the encoder outputs (query modes ``+mean`` /
``+logsumexp``) and the query projection."""

from __future__ import annotations

import torch
from torch import nn

from partgm.models.layers import MLP


def other_group_summary(
    h: torch.Tensor, key_group: torch.Tensor, key_valid: torch.Tensor | None, query_group: torch.Tensor, kind: str
) -> torch.Tensor:
    """Per query, the mean or logsumexp over the encoder outputs of the *other* group (0 if it is empty).

    h [B, Lk, H], key_group [B, Lk], key_valid [B, Lk] or None, query_group [B, Lq] -> [B, Lq, H].
    """
    summaries = []
    for g in (0, 1):
        member = key_group == g
        if key_valid is not None:
            member = member & key_valid
        count = member.sum(dim=1)[:, None]  # [B, 1]
        if kind == "mean":
            summary = (h * member[..., None].to(h.dtype)).sum(dim=1) / count.clamp(min=1).to(h.dtype)
        else:
            summary = h.masked_fill(~member[..., None], float("-inf")).logsumexp(dim=1)
            summary = torch.where(count > 0, summary, torch.zeros_like(summary))
        summaries.append(summary)
    stacked = torch.stack(summaries, dim=1)  # [B, 2, H]
    other = (1 - query_group.long())[..., None].expand(-1, -1, h.shape[-1])
    return stacked.gather(1, other)


def query_processor(kind: str, hidden: int) -> nn.Module:
    """GroupSwap's query projection: ``linear``; ``mlp4``, the reference's Linear-SiLU-Linear of width 4H
    (parameters ``0.*`` and ``2.*``, as the reference names them); ``mlp4-gelu``, partgm's earlier
    Linear-GELU-tanh-Linear (``MLP``: ``fc.*`` and ``proj.*``)."""
    if kind == "linear":
        return nn.Linear(hidden, hidden)
    if kind == "mlp4":
        return nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.SiLU(), nn.Linear(4 * hidden, hidden))
    return MLP(hidden, 4)
