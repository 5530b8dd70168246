"""Library entry points that work on configs and run directories: prepare a config's data, and draw
samples from a trained run. The CLI, the quickstart and the evaluations all call these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from partgm.config import RunConfig
from partgm.errors import PartgmError
from partgm.samplers import Sampler, SamplingOptions, generate, make_prompt


def prepare_data(cfg: RunConfig, progress: bool = True) -> Any:
    """The prepared dataset of ``cfg.data`` (built, or reused when its inputs are unchanged)."""
    from partgm.data import prepare_dataset
    from partgm.data.images import image_length, is_image_data, prepare_image_dataset

    d = cfg.data
    if is_image_data(d.corpus, d.tokenizer):  # the source fixes the length of a grid (digits: 64)
        d.length = image_length(d.corpus, d.length)
        return prepare_image_dataset(
            d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress
        )
    return prepare_dataset(
        d.corpus, d.tokenizer, d.length, d.val_fraction, d.cache_dir, seed=cfg.train.seed, progress=progress,
        split_documents=d.split_documents,
    )


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
    algorithm: Any,
    model: torch.nn.Module,
    tokenizer: Any,
    length: int,
    options: SamplingOptions,
    *,
    num_samples: int,
    batch: int,
    seed: int,
    sampler: Any = "auto",
    prompt: str | None = None,
    fixed: dict[int, int] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """Draw ``num_samples`` texts of ``length`` tokens in batches of ``batch``: a list of
    {"index", "text", "token_ids"} (the text without BOS). A length above the model's context is refused."""
    if num_samples < 1 or batch < 1:
        raise PartgmError("the number of samples and the batch size must be positive")
    prefix = tokenizer.encode(check_text(prompt, "--prompt")) if prompt else None
    generator = torch.Generator(device=device).manual_seed(seed)
    skip = 0 if algorithm.bos_id is None else 1
    records: list[dict[str, Any]] = []
    while len(records) < num_samples:
        n = min(batch, num_samples - len(records))
        p = make_prompt(n, length, algorithm.bos_id, prefix, fixed, device=device)
        tokens = generate(algorithm, model, p, options, sampler, generator, precision)
        for row in tokens.tolist():
            records.append({"index": len(records), "text": tokenizer.decode(row[skip:]), "token_ids": row})
    return records


def sample_run(
    run_dir: str | Path,
    options: SamplingOptions | None = None,
    *,
    num_samples: int = 4,
    batch: int = 4,
    seed: int = 0,
    sampler: Any = "auto",
    prompt: str | None = None,
    infill: list[str] | None = None,
    weights: str = "ema",
    device: str = "cpu",
    precision: str = "auto",
) -> list[dict[str, Any]]:
    """Draw text samples from a run directory: a list of {"index", "text", "token_ids"} plus what made
    them: "prompt", "infill", "sampler", "steps", "nucleus", "temperature", "seed", "weights", "step".
    ``sampler``: a name or a ``Sampler`` instance; ``precision`` as in ``generate``."""
    from partgm.engine import load_run
    from partgm.samplers import get_sampler

    options = options or SamplingOptions()
    run = load_run(Path(run_dir), weights=weights, device=device)
    if run.tokenizer is None:
        raise PartgmError(f"run directory '{run_dir}' has no tokenizer.json")
    if run.tokenizer.vocab_size != run.algorithm.vocab_size:
        raise PartgmError(
            f"tokenizer vocab {run.tokenizer.vocab_size} does not match the checkpoint's {run.algorithm.vocab_size}"
        )
    fixed = parse_infill(infill or [], run.tokenizer)
    records = sample_texts(
        run.algorithm, run.model, run.tokenizer, run.cfg.data.length, options, num_samples=num_samples,
        batch=batch, seed=seed, sampler=sampler, prompt=prompt, fixed=fixed, device=device, precision=precision,
    )
    chosen = sampler if isinstance(sampler, Sampler) else get_sampler(run.algorithm, sampler)
    made_by = {
        "prompt": prompt, "infill": list(infill or []), "sampler": chosen.name, "precision": precision,
        "steps": options.steps, "nucleus": options.nucleus, "temperature": options.temperature, "seed": seed,
        "weights": weights, "step": run.step,
    }
    return [{**r, **made_by} for r in records]
