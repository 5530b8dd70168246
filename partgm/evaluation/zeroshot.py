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
argmax, through ``Algorithm.logits`` given every non-target token: MDLM masks all target positions at
once; PGM queries them with the rest as the clean group; AR: teacher-forced argmax at each position.

Multiple choice: the lowest score wins. AR: exact negative log-likelihood. MDLM / PGM: Monte-Carlo
NELBO averaged over ``mc_samples`` draws of (t, mask) with the algorithm's own estimator
(``Algorithm.masked_nelbo_terms``: weight ``w(t)`` on the masked tokens), the masks restricted to
the scored region and every other position clean. ``score="joint"`` scores context + answer (an upper
bound on ``-log p(context, answer | BOS, EOS tail)``; AR: the exact ``-log p(context, answer | BOS)``),
``score="answer"`` the answer only given the context. Draws are shared by all sequences (common random
numbers: the same times and the same per-position uniforms), which makes the comparison between the
choices of a question much less noisy. Accuracy is reported both unnormalised and normalised by the
number of scored tokens; ``normalize`` picks the headline ``accuracy``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError
from partgm.evaluation.scoring import Scorer
from partgm.evaluation.tasks import Example, build_batch, encode_pair, read_choice, read_lambada
from partgm.run.layout import EVAL


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
    from partgm.fileio import atomic_write_json, atomic_write_text
    from partgm.run.checkpoint import load_run

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
    out_path = Path(out) if out else Path(run_dir) / EVAL / f"{task}-{Path(data).stem}.json"
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
