"""Image runs: class-conditional samples of a trained run, decoded to pixels, written as a PNG grid
(one row per class) and the codes as JSONL. The glue above the engine, the samplers and the image
data; ``partgm.images`` below it is a leaf (tokenizers, Halton orders, FID, grids)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partgm.data.images import load_image_tokenizer
from partgm.errors import PartgmError
from partgm.fileio import atomic_write_text
from partgm.images.digits import tokens_to_images
from partgm.images.grid import save_image_grid
from partgm.run.checkpoint import read_data_header
from partgm.samplers import generate, make_prompt


def is_image_run(run_dir: str | Path) -> bool:
    """True when the run's data (``RUN/data.json``) is a token grid (False when it cannot be read: the
    text path then reports the problem)."""
    try:
        return bool(read_data_header(Path(run_dir)).get("grid"))
    except PartgmError:
        return False


def decode_images(header: dict[str, Any], tokens: torch.Tensor | np.ndarray) -> np.ndarray:
    """Token grids [N, L] -> images in [0, 1]: [N, h, w] grey (digits) or [N, H, W, 3] (a VQ tokenizer's
    decoder, read from the path the data header names)."""
    height, width = header["grid"]
    image = header.get("image") or {}
    tokens = torch.as_tensor(np.asarray(tokens)).long()
    if image.get("kind") == "digits":
        return tokens_to_images(tokens.numpy(), image["levels"], height, width)
    vq, _, _ = load_image_tokenizer(header["tokenizer"])
    with torch.no_grad():
        pixels = torch.cat([vq.decode(chunk.view(-1, height, width)) for chunk in tokens.split(64)])
    return ((pixels.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1).numpy()


def sample_images(run: Any, draws: Any, labels: list[int] | None, device: str = "cpu") -> torch.Tensor:
    """Token grids [N, L] of a loaded run: ``draws.num_samples`` per label in ``labels`` (class-conditional
    runs; None: unconditional), drawn ``draws.batch`` at a time with one generator seeded ``draws.seed``
    (``draws``: a ``partgm.run.sampling.Draws``)."""
    n = draws.num_samples
    wanted = [None] * n if labels is None else [c for c in labels for _ in range(n)]
    generator = torch.Generator(device=device).manual_seed(draws.seed)
    length = run.algorithm.space.length
    out = []
    for start in range(0, len(wanted), draws.batch):
        chunk = wanted[start : start + draws.batch]
        prompt = make_prompt(len(chunk), length, None, device=device, labels=None if labels is None else chunk)
        out.append(generate(run.algorithm, run.model, prompt, draws.options, draws.sampler, generator,
                            draws.precision).cpu())
    return torch.cat(out)


def with_image_sampling(run: Any, draws: Any, settings: Any) -> Any:
    """``draws`` with its sampler configured by the authors' options ``settings`` (``ImageSampling``) when
    they differ from the defaults; unchanged otherwise."""
    from dataclasses import replace

    from partgm.samplers.image_schedules import ImageSampling
    from partgm.samplers.images import image_sampler

    if settings == ImageSampling():
        return draws
    return replace(draws, sampler=image_sampler(run.algorithm, draws.sampler_name, settings))


def class_list(header: dict[str, Any], classes: list[int] | None) -> list[int] | None:
    """The classes to sample: ``classes`` (checked) or all of a class-conditional run; None otherwise."""
    n = int(header.get("num_classes") or 0)
    if not n:
        if classes:
            raise PartgmError("this run is not class-conditional: sample without --class")
        return None
    bad = [c for c in classes or [] if not 0 <= c < n]
    if bad:
        raise PartgmError(f"--class {bad[0]} is outside 0..{n - 1}")
    return list(classes) if classes else list(range(n))


def image_sample_paths(out: Path) -> tuple[Path, Path]:
    """``out.png`` and ``out.jsonl`` (a ``.png`` / ``.jsonl`` suffix of ``out`` is dropped first)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".png", ".jsonl") else out
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".jsonl")


def write_image_samples(
    out: Path, header: dict[str, Any], tokens: torch.Tensor, labels: list[int] | None, per_row: int,
    meta: dict[str, Any],
) -> tuple[Path, Path]:
    """``out.png`` (one row per class) and ``out.jsonl`` (one record per image: index, label, token_ids
    and ``meta``), written atomically. Returns both paths."""
    names = header.get("class_names") or []
    row_labels = None if labels is None else [names[c] if c < len(names) else str(c) for c in labels]
    png, jsonl = image_sample_paths(out)
    save_image_grid(decode_images(header, tokens), png, nrow=per_row, row_labels=row_labels)
    lines = [
        json.dumps({"index": i, "label": None if labels is None else labels[i // per_row], "token_ids": row, **meta})
        for i, row in enumerate(tokens.tolist())
    ]
    atomic_write_text(jsonl, "".join(line + "\n" for line in lines))
    return png, jsonl
