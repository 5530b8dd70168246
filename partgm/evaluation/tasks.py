"""Zero-shot task files and their token batches (lm-eval-harness style JSONL; see ``zeroshot``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partgm.errors import PartgmError
from partgm.fileio import read_jsonl


@dataclass
class Example:
    line: int
    context: str
    continuations: list[str]  # LAMBADA: [target]; multiple choice: the choices
    gold: int


def _read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for n, record in read_jsonl(path, "task file"):
        if not isinstance(record, dict):
            raise PartgmError(f"{path}:{n}: expected a JSON object")
        out.append((n, record))
    if not out:
        raise PartgmError(f"task file '{path}' holds no examples")
    return out


_LAST_WORD = re.compile(r"(.*\S)(\s+)(\S+)\s*", re.DOTALL)


def read_lambada(path: str | Path) -> list[Example]:
    """LAMBADA examples: ``{"text": ...}`` -> context + target (the last whitespace-separated word)."""
    examples = []
    for n, record in _read_jsonl(path):
        text = record.get("text")
        if not isinstance(text, str):
            raise PartgmError(f'{path}:{n}: a LAMBADA line needs a "text" string')
        m = _LAST_WORD.fullmatch(text.lstrip())
        if not m:
            raise PartgmError(f"{path}:{n}: the text needs a context and a last word")
        examples.append(Example(n, m[1], [m[2][-1] + m[3]], 0))
    return examples


def read_choice(path: str | Path) -> list[Example]:
    """Multiple-choice examples: ``{"query" | "context": str, "choices": [str, ...], "gold": int}``."""
    examples = []
    for n, record in _read_jsonl(path):
        context = record.get("query", record.get("context"))
        choices, gold = record.get("choices"), record.get("gold")
        if not isinstance(context, str):
            raise PartgmError(f'{path}:{n}: a multiple-choice line needs a "query" (or "context") string')
        if (
            not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) and c for c in choices)
        ):
            raise PartgmError(f'{path}:{n}: "choices" must be a list of at least two non-empty strings')
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise PartgmError(f'{path}:{n}: "gold" must be an integer index into the {len(choices)} choices')
        conts = [c if (c[0].isspace() or not context or context[-1].isspace()) else " " + c for c in choices]
        examples.append(Example(n, context, conts, gold))
    return examples


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) where the continuation ids are what ``context + continuation``
    adds after the context's ids (lm-eval's rule), or the continuation alone where the two disagree."""
    ctx = tokenizer.encode(context) if context else []
    whole = tokenizer.encode(context + continuation)
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx) :]
    return ctx, tokenizer.encode(continuation)


@dataclass
class ScoringBatch:
    x: torch.Tensor  # [B, T] token ids
    context: torch.Tensor  # [B, T] bool: context positions
    target: torch.Tensor  # [B, T] bool: continuation positions
    truncated: int


def build_batch(
    pairs: Sequence[tuple[list[int], list[int]]],
    lines: Sequence[int],
    length: int,
    bos_id: int,
    pad_id: int,
    pad_to_length: bool,
    truncate: bool,
) -> ScoringBatch:
    """Rows ``[BOS] + context + continuation`` padded with ``pad_id`` (to ``length`` or the longest row)."""
    rows, truncated = [], 0
    for (ctx, cont), line in zip(pairs, lines):
        if not cont:
            raise PartgmError(f"line {line}: the continuation is empty after tokenisation")
        room = length - 1 - len(cont)
        if room < 0 or (len(ctx) > room and not truncate):
            raise PartgmError(
                f"line {line}: {1 + len(ctx) + len(cont)} tokens with BOS, more than the model's length {length}"
                + ("" if room < 0 else " (pass --truncate to drop context tokens from the left)")
            )
        if len(ctx) > room:
            ctx, truncated = ctx[len(ctx) - room :] if room else [], truncated + 1
        rows.append((ctx, cont))
    width = length if pad_to_length else max(1 + len(c) + len(t) for c, t in rows)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    context = torch.zeros(len(rows), width, dtype=torch.bool)
    target = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (ctx, cont) in enumerate(rows):
        n = 1 + len(ctx)
        x[i, 0] = bos_id
        x[i, 1:n] = torch.tensor(ctx, dtype=torch.long)
        x[i, n : n + len(cont)] = torch.tensor(cont, dtype=torch.long)
        context[i, 1:n] = True
        target[i, n : n + len(cont)] = True
    return ScoringBatch(x, context, target, truncated)
