"""Zero-shot downstream scoring for MDLM, PGM and AR alike: LAMBADA and multiple choice.

Task files are lm-eval-harness style JSONL (one JSON object a line; blank lines skipped):

- LAMBADA: ``{"text": "..."}``; the target is the last whitespace-separated word (with the whitespace
  before it), the context everything before.
- Multiple choice: ``{"query": ..., "choices": [...], "gold": i}`` (``"context"`` is accepted instead of
  ``"query"``); the answer follows the context after one space unless the choice starts with whitespace
  or the context ends with it (lm-eval's target delimiter).

A pair (context, continuation) is tokenised as lm-eval does: the continuation's tokens are those the
whole text adds after the context's tokens. Sequences are ``[BOS] + context + continuation``; for
MDLM / PGM they are padded to the model's length with EOS (training rows are full-length and
documents end with EOS), for AR to the batch's longest (causal: padding after a token never changes
it). A sequence longer than the model's length is an error unless ``truncate`` drops context tokens
from the left.

LAMBADA accuracy: the whole target is predicted in one pass and every target token must equal the
argmax. MDLM: all target positions are [MASK] at once; PGM: the target positions form group 1 (the
queried group), everything else group 0; AR: teacher-forced argmax at each target position.

Multiple choice: the lowest score wins. AR: exact negative log-likelihood. MDLM / PGM: Monte-Carlo
NELBO averaged over ``mc_samples`` draws of (t, mask) with the algorithm's own estimator (MDLM
``masked_nelbo``, PGM ``weighted_nll`` with group 1 = masked, weight ``w(t)``), the masks restricted to
the scored region and every other position clean. ``score="joint"`` scores context + answer (an upper
bound on ``-log p(context, answer | BOS, EOS tail)``; AR: the exact ``-log p(context, answer | BOS)``),
``score="answer"`` the answer only given the context. Draws are shared by all sequences (common random
numbers: the same times and the same per-position uniforms), which makes the comparison between the
choices of a question much less noisy. Accuracy is reported both unnormalised and normalised by the
number of scored tokens; ``normalize`` picks the headline ``accuracy``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partgm.algorithms.base import Batch as TokenBatch
from partgm.algorithms.base import Context
from partgm.errors import PartgmError
from partgm.schedules import antithetic_times


@dataclass
class Example:
    line: int
    context: str
    continuations: list[str]  # LAMBADA: [target]; multiple choice: the choices
    gold: int


def _read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"task file '{path}' does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PartgmError(f"cannot read task file '{path}': {exc}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PartgmError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
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


class Scorer:
    """Argmax predictions and (MC) likelihood scores of sequences for one algorithm and model, through
    the algorithm's denoiser (``Algorithm.logits``) and NELBO terms; exact for left-to-right models."""

    def __init__(self, algorithm: Any, model: torch.nn.Module, device: str | torch.device = "cpu"):
        self.algorithm, self.model, self.device = algorithm, model, torch.device(device)

    @property
    def exact(self) -> bool:
        return self.algorithm.exact_likelihood

    @property
    def pads_to_length(self) -> bool:
        return not self.exact

    @torch.no_grad()
    def argmax(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax ids [B, T] at the target positions (-1 elsewhere), all-correct [B] bool), every
        target position predicted at once from the non-target tokens (AR: teacher forcing)."""
        x, target = x.to(self.device), target.to(self.device)
        first = 1 if self.exact else 0  # a left-to-right model does not predict position 0
        positions = torch.arange(first, x.shape[1], device=self.device).expand(x.shape[0], -1)
        pred = torch.full_like(x, -1)
        pred[:, first:] = self.algorithm.logits(self.model, Context(x, ~target), positions).argmax(-1)
        pred = torch.where(target, pred, torch.full_like(pred, -1))
        correct = ((pred == x) | ~target).all(dim=1)
        return pred.cpu(), correct.cpu()

    @torch.no_grad()
    def nll(self, x: torch.Tensor, region: torch.Tensor, mc_samples: int = 32, seed: int = 0) -> torch.Tensor:
        """Per-row score (float64 [B]) of the tokens in ``region`` [B, T]: the exact NLL given the tokens
        before for left-to-right models; else the NELBO averaged over ``mc_samples`` draws shared by all rows."""
        x, region = x.to(self.device), region.to(self.device)
        if self.exact:
            nll = self.algorithm.sequence_nll(self.model, TokenBatch(x)).double()
            return (nll * region[:, 1:]).sum(1).cpu()
        if mc_samples < 1:
            raise PartgmError("the number of Monte-Carlo samples must be positive")
        gen = torch.Generator().manual_seed(seed)
        times = antithetic_times(mc_samples, gen)  # [K], on CPU
        uniforms = torch.rand(mc_samples, x.shape[1], generator=gen, dtype=torch.float64)  # [K, T]
        schedule = self.algorithm.schedule
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=self.device)
        for k in range(mc_samples):
            t = times[k].expand(x.shape[0]).to(self.device)
            p_mask = float(1.0 - schedule.alpha(times[k].double()))
            masked = region & (uniforms[k] < p_mask).to(self.device)[None, :]
            total += self.algorithm.masked_nelbo_terms(self.model, TokenBatch(x), masked, t).double().sum(1)
        return (total / mc_samples).cpu()


def _batches(n: int, size: int) -> list[slice]:
    if size < 1:
        raise PartgmError("--batch must be positive")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def lambada_accuracy(
    scorer: Scorer,
    tokenizer: Any,
    examples: Sequence[Example],
    length: int,
    bos_id: int,
    pad_id: int,
    batch_size: int = 8,
    truncate: bool = False,
) -> dict[str, Any]:
    """Accuracy with every target token matching the argmax, plus per-example predictions."""
    pairs = [encode_pair(tokenizer, e.context, e.continuations[0]) for e in examples]
    predictions, correct, truncated = [], 0, 0
    for sl in _batches(len(examples), batch_size):
        batch = build_batch(
            pairs[sl], [e.line for e in examples[sl]], length, bos_id, pad_id, scorer.pads_to_length, truncate
        )
        truncated += batch.truncated
        pred, ok = scorer.argmax(batch.x, batch.target)
        for i, e in enumerate(examples[sl]):
            ids = pred[i][batch.target[i]].tolist()
            predictions.append(
                {
                    "line": e.line,
                    "target": e.continuations[0],
                    "target_ids": pairs[sl][i][1],
                    "predicted_ids": ids,
                    "predicted": tokenizer.decode(ids),
                    "correct": bool(ok[i]),
                }
            )
            correct += bool(ok[i])
    return {
        "accuracy": correct / len(examples),
        "correct": correct,
        "count": len(examples),
        "target_tokens_mean": sum(len(p[1]) for p in pairs) / len(pairs),
        "truncated": truncated,
        "predictions": predictions,
    }


def choice_accuracy(
    scorer: Scorer,
    tokenizer: Any,
    examples: Sequence[Example],
    length: int,
    bos_id: int,
    pad_id: int,
    batch_size: int = 8,
    mc_samples: int = 32,
    score: str = "joint",
    normalize: str = "none",
    seed: int = 0,
    truncate: bool = False,
) -> dict[str, Any]:
    """Accuracy of ``argmin`` score over the choices, unnormalised and per scored token."""
    if score not in ("joint", "answer"):
        raise PartgmError(f"score must be joint or answer, not '{score}'")
    if normalize not in ("none", "tokens"):
        raise PartgmError(f"normalize must be none or tokens, not '{normalize}'")
    flat = [(i, j) for i, e in enumerate(examples) for j in range(len(e.continuations))]
    pairs = [encode_pair(tokenizer, examples[i].context, examples[i].continuations[j]) for i, j in flat]
    lines = [examples[i].line for i, _ in flat]
    raw: list[float] = []
    counts: list[int] = []
    truncated = 0
    for sl in _batches(len(flat), batch_size):
        batch = build_batch(pairs[sl], lines[sl], length, bos_id, pad_id, scorer.pads_to_length, truncate)
        truncated += batch.truncated
        region = batch.target | batch.context if score == "joint" else batch.target
        raw += scorer.nll(batch.x, region, mc_samples, seed).tolist()
        counts += region.sum(1).tolist()
    per_example: list[dict[str, Any]] = []
    hits = {"none": 0, "tokens": 0}
    k = 0
    for e in examples:
        n = len(e.continuations)
        s, c = raw[k : k + n], counts[k : k + n]
        k += n
        norm = [a / max(b, 1) for a, b in zip(s, c)]
        pick = min(range(n), key=lambda j: s[j])
        pick_norm = min(range(n), key=lambda j: norm[j])
        hits["none"] += pick == e.gold
        hits["tokens"] += pick_norm == e.gold
        per_example.append(
            {
                "line": e.line,
                "gold": e.gold,
                "pred": pick,
                "pred_token_normalized": pick_norm,
                "scores": s,
                "scored_tokens": c,
            }
        )
    total = len(examples)
    return {
        "accuracy": hits[normalize] / total,
        "accuracy_unnormalized": hits["none"] / total,
        "accuracy_token_normalized": hits["tokens"] / total,
        "count": total,
        "truncated": truncated,
        "predictions": per_example,
    }


def evaluate_task(
    task: str,
    run_dir: str | Path,
    data: str | Path,
    batch: int = 8,
    weights: str = "ema",
    device: str = "cpu",
    limit: int = 0,
    truncate: bool = False,
    mc_samples: int = 32,
    score: str = "joint",
    normalize: str = "none",
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """``task`` = ``lambada`` or ``choice`` on a run directory; writes ``RUN_DIR/eval/TASK-NAME.json``
    (or ``out``) and the per-example predictions JSONL beside it; returns the summary record."""
    from partgm.engine import load_run
    from partgm.engine.checkpoint import atomic_write_json, atomic_write_text

    if task not in ("lambada", "choice"):
        raise PartgmError(f"unknown task '{task}'")
    examples = read_lambada(data) if task == "lambada" else read_choice(data)
    if limit > 0:
        examples = examples[:limit]
    run = load_run(Path(run_dir), weights=weights, device=device)
    if run.tokenizer is None:
        raise PartgmError(f"run directory '{run_dir}' has no tokenizer.json: cannot tokenise the task")
    scorer = Scorer(run.algorithm, run.model, device)
    length = run.cfg.data.length
    bos = run.algorithm.bos_id
    pad = int(run.data_header.get("eos_id", run.tokenizer.eos_id))
    if task == "lambada":
        result = lambada_accuracy(scorer, run.tokenizer, examples, length, bos, pad, batch, truncate)
        method = {"lambada": "whole target predicted in one pass; all target tokens must equal the argmax"}
    else:
        result = choice_accuracy(
            scorer,
            run.tokenizer,
            examples,
            length,
            bos,
            pad,
            batch,
            mc_samples,
            score,
            normalize,
            seed,
            truncate,
        )
        method = {
            "score": score,
            "normalize": normalize,
            "mc_samples": None if scorer.exact else mc_samples,
            "seed": seed,
            "estimator": "exact log-likelihood" if scorer.exact else "Monte-Carlo NELBO (upper bound)",
        }
    predictions = result.pop("predictions")
    out_path = Path(out) if out else Path(run_dir) / "eval" / f"{task}-{Path(data).stem}.json"
    pred_path = out_path.with_name(out_path.stem + ".predictions.jsonl")
    record = {
        "metric": task,
        "run_dir": str(run_dir),
        "algo": run.cfg.algo,
        "model_step": run.step,
        "weights": weights,
        "data": str(data),
        **result,
        **method,
        "length": length,
        "padding": "EOS to the model length" if scorer.pads_to_length else "none needed (causal)",
        "predictions_file": str(pred_path),
        "device": device,
    }
    atomic_write_text(pred_path, "".join(json.dumps(p) + "\n" for p in predictions))
    atomic_write_json(out_path, record)
    return record
