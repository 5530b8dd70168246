"""The one sampling path from a trained model: ``Draws`` (what a sampling command asks for, gathered
once: options, sampler, counts, seed, precision), prompts and infills as token positions, and text
samples as records. Images: ``partgm.run.images.sample_images`` takes the same ``Draws``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from partgm.errors import PartgmError
from partgm.precision import PRECISIONS
from partgm.samplers import Sampler, SamplingOptions, generate, make_prompt


@dataclass(frozen=True)
class Draws:
    """``num_samples`` samples (images: per class) drawn ``batch`` at a time from one generator seeded
    ``seed``, by ``sampler`` (a name of the algorithm's family, ``auto``, or a ``Sampler``) with
    ``options``, under autocast ``precision`` (``auto`` | ``fp32`` | ``bf16``; see ``generate``)."""

    options: SamplingOptions = field(default_factory=SamplingOptions)
    sampler: Any = "auto"
    num_samples: int = 4
    batch: int = 4
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("num_samples", "batch", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name != "seed" and value < 1) or (
                    name == "seed" and not -(2**63) <= value < 2**64):
                raise PartgmError(f"{name} must be a positive integer, got {value!r}" if name != "seed"
                                  else f"seed must be an integer, got {value!r}")
        if self.precision not in PRECISIONS:
            raise PartgmError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def sampler_name(self) -> str:
        """The sampler as recorded: its name (``auto`` stays ``auto``)."""
        return self.sampler if isinstance(self.sampler, str) else self.sampler.name


def place_texts(texts: dict[int, str], tokenizer: Any) -> dict[int, int]:
    """{position: text} -> {position: token id}, each text's tokens placed from its position on."""
    fixed: dict[int, int] = {}
    for pos, text in texts.items():
        for offset, token in enumerate(tokenizer.encode(text)):
            fixed[int(pos) + offset] = token
    return fixed


def check_text(text: str, what: str) -> str:
    """``text`` itself, or a one-line error when it is not valid UTF-8 (undecodable command-line bytes
    arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PartgmError(f"{what} is not valid UTF-8 text") from None
    return text


def parse_infill(items: list[str], tokenizer: Any) -> dict[int, int]:
    """``POS:TEXT`` items -> {position: token id}, the text's tokens placed from POS on. Empty texts and
    spans that overlap (or repeat) a position are refused."""
    fixed: dict[int, int] = {}
    owner: dict[int, str] = {}
    for item in items:
        pos, sep, text = check_text(item, f"--infill '{item.encode('utf-8', 'replace').decode()}'").partition(":")
        if not sep or not pos.strip().isdigit():
            raise PartgmError(f"--infill '{item}' must look like POSITION:TEXT, e.g. 40:the LORD")
        tokens = tokenizer.encode(text)
        if not tokens:
            raise PartgmError(f"--infill '{item}' has no text after the colon")
        for offset, token in enumerate(tokens):
            position = int(pos) + offset
            if position in owner:
                raise PartgmError(f"--infill '{item}' overlaps '{owner[position]}' at position {position}")
            fixed[position], owner[position] = token, item
    return fixed


def sample_texts(
    run: Any,
    draws: Draws,
    prompt: str | None = None,
    fixed: dict[int, int] | None = None,
    *,
    length: int | None = None,
    at_eos: str = "keep",
) -> list[dict[str, Any]]:
    """Draw ``draws.num_samples`` texts of ``length`` tokens (default: the trained length) from ``run`` (a
    ``LoadedRun``: its algorithm, model and tokenizer; on the model's device): a list of
    {"index", "text", "token_ids"} (the text without BOS; ``at_eos`` as in ``decode_sample``). ``prompt``
    is placed after BOS, ``fixed`` {position: id} anywhere. A length above the model's context is refused."""
    algorithm, tokenizer = run.algorithm, run.tokenizer
    device = next(run.model.parameters()).device
    prefix = tokenizer.encode(check_text(prompt, "--prompt")) if prompt else None
    generator = torch.Generator(device=device).manual_seed(draws.seed)
    skip = 0 if algorithm.bos_id is None else 1
    length = length or run.cfg.data.length
    records: list[dict[str, Any]] = []
    while len(records) < draws.num_samples:
        n = min(draws.batch, draws.num_samples - len(records))
        p = make_prompt(n, length, algorithm.bos_id, prefix, fixed, device=device)
        tokens = generate(algorithm, run.model, p, draws.options, draws.sampler, generator, draws.precision)
        for row in tokens.tolist():
            text = decode_sample(tokenizer, row[skip:], at_eos)
            records.append({"index": len(records), "text": text, "token_ids": row})
    return records


AT_EOS = ("keep", "stop", "strip")


def decode_sample(tokenizer: Any, ids: list[int], at_eos: str = "keep") -> str:
    """The text of generated ``ids`` (BOS already dropped). At the tokenizer's end-of-text token:
    ``keep`` decodes it like any token, ``stop`` ends the text at the first one, ``strip`` drops them all."""
    if at_eos not in AT_EOS:
        raise PartgmError(f"at_eos must be one of {', '.join(AT_EOS)}, got {at_eos!r}")
    eos = getattr(tokenizer, "eos_id", None)
    if eos is not None and at_eos == "stop" and eos in ids:
        ids = ids[: ids.index(eos)]
    elif eos is not None and at_eos == "strip":
        ids = [i for i in ids if i != eos]
    return tokenizer.decode(ids)


def prompt_positions(run_dir: Path, text: str, at: int | None = None) -> list[tuple[int, int, str]]:
    """(position, token id, token text) of each token of ``text`` in the run's tokenizer: placed after BOS
    as ``--prompt`` does, or from position ``at`` as ``--infill AT:TEXT`` does."""
    from partgm.data.tokenizers import Tokenizer
    from partgm.run.checkpoint import read_data_header, read_run_config
    from partgm.run.layout import TOKENIZER

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if not (run_dir / TOKENIZER).is_file():
        raise PartgmError(f"run directory '{run_dir}' has no {TOKENIZER}")
    tokenizer = Tokenizer.from_file(run_dir / TOKENIZER, cfg.data.tokenizer)
    ids = tokenizer.encode(check_text(text, "the text"))
    if not ids:
        raise PartgmError("the text has no tokens")
    first = (0 if read_data_header(run_dir).get("bos_id") is None else 1) if at is None else at
    return [(first + k, i, tokenizer.decode([i])) for k, i in enumerate(ids)]


def sample_run(
    run_dir: str | Path,
    draws: Draws | None = None,
    *,
    prompt: str | None = None,
    infill: list[str] | None = None,
    weights: str = "ema",
    device: str = "cpu",
    at_eos: str = "keep",
) -> list[dict[str, Any]]:
    """Draw text samples (``draws``; default ``Draws()``) from a run directory: a list of
    {"index", "text", "token_ids"} plus what made them: "prompt", "infill", "sampler", "precision",
    "at_eos", "steps", "nucleus", "temperature", "seed", "weights", "step". ``infill``: ``POS:TEXT``
    items; ``at_eos`` as in ``decode_sample``."""
    from partgm.run.checkpoint import load_run
    from partgm.samplers import get_sampler

    draws = draws or Draws()
    options, sampler = draws.options, draws.sampler
    run = load_run(Path(run_dir), weights=weights, device=device)
    if run.tokenizer is None:
        raise PartgmError(f"run directory '{run_dir}' has no tokenizer.json")
    if run.tokenizer.vocab_size != run.algorithm.vocab_size:
        raise PartgmError(
            f"tokenizer vocab {run.tokenizer.vocab_size} does not match the checkpoint's {run.algorithm.vocab_size}"
        )
    fixed = parse_infill(infill or [], run.tokenizer)
    records = sample_texts(run, draws, prompt, fixed, at_eos=at_eos)
    chosen = sampler if isinstance(sampler, Sampler) else get_sampler(run.algorithm, sampler)
    made_by = {
        "prompt": prompt, "infill": list(infill or []), "sampler": chosen.name, "precision": draws.precision,
        "at_eos": at_eos, "steps": options.steps, "nucleus": options.nucleus, "temperature": options.temperature,
        "seed": draws.seed, "weights": weights, "step": run.step,
    }
    return [{**r, **made_by} for r in records]
