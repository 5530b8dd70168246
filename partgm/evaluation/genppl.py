"""Generative perplexity under a judge language model, reported with the samples' unigram entropy.

Protocol (spec section 7): draw N samples, decode them with the model's tokenizer (special tokens kept,
so document boundaries reach the judge as its end-of-text token when the tokenizers share it),
retokenise each text with the judge's tokenizer, truncate it so that the judge reads at most
``max_length`` tokens including the BOS it is given first, and score every retokenised token:
``gen_ppl = exp(sum NLL / number of scored tokens)`` over all samples (token weighted), log-softmax in
float64. Entropy: per sample, the unigram entropy (nats) of the generated token ids (the row without
its position-0 BOS), averaged over samples.

Judges: a partgm AR run directory (offline), or a ``transformers`` causal LM from a local directory or
a Hub name (``gpt2-large`` is the paper's judge).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from partgm.errors import PartgmError
from partgm.fileio import read_jsonl
from partgm.precision import resolved_precision
from partgm.run.layout import CHECKPOINTS, EVAL
from partgm.run.sampling import Draws

DEFAULT_MAX_LENGTH = 1024


def unigram_entropy(ids: Sequence[int]) -> float:
    """Entropy in nats of the empirical distribution of ``ids`` (0 for an empty sequence)."""
    n = len(ids)
    if n == 0:
        return 0.0
    return -sum((c / n) * math.log(c / n) for c in Counter(int(i) for i in ids).values())


def mean_entropy(rows: Sequence[Sequence[int]], skip_first: bool = True) -> float:
    """Average over rows of :func:`unigram_entropy` (without position 0, the BOS, by default)."""
    if not rows:
        return float("nan")
    return sum(unigram_entropy(list(r)[1:] if skip_first else list(r)) for r in rows) / len(rows)


@dataclass(frozen=True)
class JudgeOptions:
    """How the judge reads samples: at most ``max_length`` tokens each (its BOS included), ``batch`` at a
    time, with a partgm judge run's ``weights``."""

    max_length: int = DEFAULT_MAX_LENGTH
    batch: int = 8
    weights: str = "ema"


class Judge:
    """A causal LM that scores text: ``tokenize`` texts with its own tokenizer, ``score`` id lists.

    ``max_length``: most tokens the judge reads at once, BOS included; ``bos_id``: the token put before
    each text (None: the first token is only context and is not scored)."""

    name: str = "judge"
    kind: str = "judge"
    max_length: int = DEFAULT_MAX_LENGTH
    bos_id: int | None = None
    precision: str = "fp32 weights, float64 log-softmax"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (right-padded), attention_mask [B, T] -> logits [B, T, V] (position t predicts t + 1)."""
        raise NotImplementedError

    @property
    def max_text_tokens(self) -> int:
        return self.max_length - (1 if self.bos_id is not None else 0)

    @torch.no_grad()
    def score(self, id_lists: Sequence[Sequence[int]], batch_size: int = 8) -> list[tuple[float, int]]:
        """Per text (sum of NLL in float64, number of scored tokens). Texts longer than
        ``max_text_tokens`` must be truncated by the caller."""
        results: list[tuple[float, int]] = []
        for start in range(0, len(id_lists), batch_size):
            chunk = [list(ids) for ids in id_lists[start : start + batch_size]]
            rows = [([self.bos_id] if self.bos_id is not None else []) + ids for ids in chunk]
            width = max(2, max(len(r) for r in rows))
            x = torch.zeros(len(rows), width, dtype=torch.long)
            attn = torch.zeros(len(rows), width, dtype=torch.long)
            for i, r in enumerate(rows):
                x[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                attn[i, : len(r)] = 1
            logits = self.logits(x, attn)[:, :-1]  # [B, T - 1, V] on the judge's device
            targets = x[:, 1:].to(logits.device)
            scored = attn[:, 1:].bool()
            for i in range(len(rows)):  # one row at a time: float64 logits of a whole batch can be GBs
                logp = F.log_softmax(logits[i].double(), dim=-1)
                nll = -logp.gather(-1, targets[i, :, None]).squeeze(-1).cpu()
                results.append((float(nll[scored[i]].sum()), int(scored[i].sum())))
        return results


class PartgmARJudge(Judge):
    """An autoregressive partgm run: its tokenizer, its BOS before each text, at most its length."""

    kind = "partgm-ar"

    def __init__(
        self,
        run_dir: str | Path,
        weights: str = "ema",
        device: str = "cpu",
        max_length: int = DEFAULT_MAX_LENGTH,
    ):
        from partgm.run.checkpoint import load_run

        run = load_run(Path(run_dir), weights=weights, device=device)
        if run.cfg.algo != "ar":
            raise PartgmError(
                f"judge '{run_dir}' is a {run.cfg.algo} run; a judge must be an autoregressive run "
                "(algo ar) or a transformers causal LM"
            )
        if run.tokenizer is None:
            raise PartgmError(f"judge run '{run_dir}' has no tokenizer.json")
        self.run, self.model, self.tokenizer = run, run.model, run.tokenizer
        self.name = str(run_dir)
        self.bos_id = run.algorithm.bos_id
        self.max_length = min(max_length, run.cfg.data.length)
        self.device = next(run.model.parameters()).device
        self.weights, self.step = weights, run.step

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer.encode_batch(list(texts))

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(ids.to(self.device))  # causal: right padding never reaches a real token


class HFJudge(Judge):
    """A ``transformers`` causal LM (local directory, or a Hub name when online)."""

    kind = "transformers"

    def __init__(self, name_or_path: str, device: str = "cpu", max_length: int = DEFAULT_MAX_LENGTH):
        try:
            import transformers
        except ImportError:
            raise PartgmError(
                "a transformers judge needs the transformers package: pip install partgm[hf] "
                "(or use a partgm AR run directory as --judge)"
            ) from None
        local = Path(name_or_path).expanduser().is_dir()
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path, local_files_only=local)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                name_or_path, local_files_only=local
            )
        except Exception as exc:  # noqa: BLE001 (OSError (not found / offline), ValueError (not a causal LM), ...)
            where = (
                "local directory"
                if local
                else "Hub model (there is no such local directory; the Hub needs network or the HF cache)"
            )
            raise PartgmError(
                f"cannot load judge '{name_or_path}' as a transformers {where}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        self.device = torch.device(device)
        self.model.float().to(self.device).eval()
        self.name = str(name_or_path)
        bos = self.tokenizer.bos_token_id
        self.bos_id = bos if bos is not None else getattr(self.model.config, "bos_token_id", None)
        limit = getattr(self.model.config, "n_positions", None) or getattr(
            self.model.config, "max_position_embeddings", None
        )
        self.max_length = min(max_length, int(limit)) if limit else max_length

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return out.logits


def load_judge(
    spec: str, device: str = "cpu", max_length: int = DEFAULT_MAX_LENGTH, weights: str = "ema"
) -> Judge:
    """A partgm AR run directory (it has ``checkpoints/``), else a transformers model (directory or name)."""
    path = Path(spec).expanduser()
    if path.is_dir() and ((path / CHECKPOINTS).is_dir() or (path / "data.json").is_file()):
        return PartgmARJudge(path, weights, device, max_length)
    if not path.is_dir() and (spec.startswith((".", "/", "~")) or path.exists()):
        raise PartgmError(
            f"judge '{spec}' is neither a partgm AR run directory nor a transformers model directory"
        )
    return HFJudge(spec, device, max_length)


def judge_texts(judge: Judge, texts: Sequence[str], batch_size: int = 8) -> dict[str, Any]:
    """Retokenise and score ``texts``: ``gen_ppl``, ``nll`` (mean per token), token counts, truncations."""
    encoded = judge.tokenize(texts)
    limit = judge.max_text_tokens
    truncated = sum(len(ids) > limit for ids in encoded)
    encoded = [ids[:limit] for ids in encoded]
    scores = judge.score(encoded, batch_size)
    total = math.fsum(s for s, _ in scores)
    count = sum(c for _, c in scores)
    if count == 0:
        raise PartgmError("the judge scored no tokens: the samples decode to empty texts")
    return {
        "gen_ppl": math.exp(total / count),
        "nll_per_token": total / count,
        "tokens_scored": count,
        "samples_truncated": truncated,
        "per_sample": scores,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", Path(text.rstrip("/")).name or text).strip("_")[:40] or "judge"


def read_samples(path: str | Path, vocab_size: int | None = None) -> list[dict[str, Any]]:
    """A samples JSONL (``partgm sample`` output): records with ``text`` and ``token_ids`` (ids in
    ``0..vocab_size-1`` when given)."""
    records = []
    for n, r in read_jsonl(path, "samples file"):
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("text"), str)
            or not isinstance(r.get("token_ids"), list)
        ):
            raise PartgmError(f'{path}:{n}: a sample needs "text" (string) and "token_ids" (list)')
        bad = [t for t in r["token_ids"] if isinstance(t, bool) or not isinstance(t, int) or t < 0
               or (vocab_size is not None and t >= vocab_size)]
        if bad:
            raise PartgmError(f"{path}:{n}: token id {bad[0]!r} is not one of the run's ids 0..{vocab_size - 1}: "
                              "were these samples drawn from this run?" if vocab_size else
                              f"{path}:{n}: token id {bad[0]!r} is not an integer >= 0")
        records.append(r)
    if not records:
        raise PartgmError(f"samples file '{path}' holds no samples")
    return records


def _checkpoint_step(run_dir: Path) -> int | None:
    try:
        from partgm.run.checkpoint import latest_checkpoint

        return int(json.loads((latest_checkpoint(run_dir) / "meta.json").read_text())["step"])
    except (PartgmError, OSError, ValueError, KeyError):
        return None


def evaluate_genppl(
    run_dir: str | Path,
    judge: str | Judge,
    draws: Draws | None = None,
    *,
    weights: str = "ema",
    device: str = "cpu",
    judge_options: JudgeOptions | None = None,
    samples_file: str | Path | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Sample ``draws`` from ``run_dir`` (default: 32 samples, 128 steps, batch 8, fp32), or read
    ``samples_file``, score with ``judge``, write ``RUN_DIR/eval/genppl-....json`` (or ``out``) and the
    samples JSONL beside it; return the record."""
    from partgm.fileio import atomic_write_json, atomic_write_text
    from partgm.run.checkpoint import read_data_header, read_run_config

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    header = read_data_header(run_dir)
    if header.get("grid"):
        raise PartgmError(f"'{run_dir}' is an image run: generative perplexity scores text runs "
                          "(image runs: partgm eval fid-digits or fid)")
    draws = draws or Draws(num_samples=32, batch=8, precision="fp32")
    jo = judge_options or JudgeOptions()
    options = draws.options
    steps, sampler, nucleus, seed = options.steps, draws.sampler_name, options.nucleus, draws.seed
    start = time.perf_counter()
    if samples_file is not None:
        records = read_samples(samples_file, header.get("vocab_size"))
        source = str(samples_file)
    else:
        from partgm.run.sampling import sample_run

        records = sample_run(run_dir, draws, weights=weights, device=device)
        source = "sampled"
    sample_time = time.perf_counter() - start
    if isinstance(judge, str):
        judge = load_judge(judge, device, jo.max_length, jo.weights)
    scores = judge_texts(judge, [r["text"] for r in records], jo.batch)
    entropy = mean_entropy([r["token_ids"] for r in records])
    tag = (
        f"{_slug(judge.name)}-n{len(records)}-steps{steps}-{sampler}-p{nucleus:g}"
        + (f"-t{options.temperature:g}" if options.temperature != 1.0 else "")
        + ("-bf16" if resolved_precision(device, draws.precision) == "bf16" else "") + f"-seed{seed}"
        if samples_file is None
        else f"{_slug(judge.name)}-{_slug(str(samples_file))}"
    )
    out_path = Path(out) if out else run_dir / EVAL / f"genppl-{tag}.json"
    samples_path = out_path.with_name(out_path.stem + ".samples.jsonl")
    result = {
        "metric": "genppl",
        "run_dir": str(run_dir),
        "algo": cfg.algo,
        "model_step": _checkpoint_step(run_dir),
        "weights": weights,
        "gen_ppl": scores["gen_ppl"],
        "entropy": entropy,
        "nll_per_token": scores["nll_per_token"],
        "num_samples": len(records),
        "steps": steps if samples_file is None else None,
        "sampler": sampler if samples_file is None else None,
        "nucleus": nucleus if samples_file is None else None,
        "seed": seed if samples_file is None else None,
        "temperature": options.temperature if samples_file is None else None,
        "precision": resolved_precision(device, draws.precision) if samples_file is None else None,
        "length": cfg.data.length,
        "samples_source": source,
        "samples_file": str(samples_path),
        "judge": judge.name,
        "judge_kind": judge.kind,
        "judge_precision": judge.precision,
        "judge_max_length": judge.max_length,
        "judge_bos_id": judge.bos_id,
        "retokenized": True,
        "tokens_scored": scores["tokens_scored"],
        "samples_truncated": scores["samples_truncated"],
        "entropy_unit": "nats, per-sample unigram entropy of the generated ids (BOS excluded), averaged",
        "device": device,
        "sample_time_s": sample_time,
        "total_time_s": time.perf_counter() - start,
    }
    lines = []
    for i, (r, (nll, count)) in enumerate(zip(records, scores["per_sample"])):
        lines.append(
            json.dumps(
                {
                    "index": r.get("index", i),
                    "text": r["text"],
                    "token_ids": r["token_ids"],
                    "judge_nll": nll,
                    "judge_tokens": count,
                    "entropy": unigram_entropy(list(r["token_ids"])[1:]),
                }
            )
            + "\n"
        )
    atomic_write_text(samples_path, "".join(lines))
    atomic_write_json(out_path, result)
    return result
