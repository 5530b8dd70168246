"""How good a VQ-VAE is on held-out images: reconstruction error (MSE, PSNR), codebook usage and the
validation loss; ``train_vqvae_folder`` trains one on an image folder and reports them, with a preview."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partgm.errors import PartgmError
from partgm.images.vqvae import VQVAE, VQVAEConfig, load_image_folder, save_vqvae, train_vqvae

PREVIEW = "reconstructions.png"
QUALITY = "quality.json"


def split_images(images: torch.Tensor, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train ``[N - n, C, H, W]``, validation ``[n, C, H, W]``), n = max(1, round(val_fraction N)) images
    chosen by a seeded shuffle. A single image is both (``evaluate_vqvae`` then measures training fit)."""
    n = len(images)
    if n < 2:
        return images, images
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    return images[order[n_val:]], images[order[:n_val]]


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, images: torch.Tensor, batch: int = 64) -> dict[str, float]:
    """On ``images`` ``[N, C, H, W]`` in [-1, 1]: ``val_loss`` (the training loss), ``val_mse`` (of
    decode(encode(x)), on the [-1, 1] scale), ``val_psnr`` (dB, on the [0, 1] scale), ``codes_used`` /
    ``codes_used_pct`` (distinct codes among the images' codes) and ``code_perplexity`` (exp of the
    entropy of their histogram: K for a uniform use of K codes)."""
    loss = sq = 0.0
    hist = torch.zeros(model.cfg.codebook_size, dtype=torch.float64)
    for chunk in images.split(batch):
        _, losses = model(chunk)
        loss += float(losses["loss"]) * len(chunk)
        codes = model.encode(chunk)
        sq += float(((model.decode(codes) - chunk) ** 2).mean()) * len(chunk)
        hist += torch.bincount(codes.flatten(), minlength=model.cfg.codebook_size).double()
    n = len(images)
    mse, p = sq / n, hist / hist.sum()
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    used = int((hist > 0).sum())
    return {"val_loss": loss / n, "val_mse": mse, "val_psnr": 10 * math.log10(4.0 / mse) if mse > 0 else math.inf,
            "codes_used": used, "codes_used_pct": 100.0 * used / model.cfg.codebook_size,
            "code_perplexity": math.exp(entropy)}


@torch.no_grad()
def save_reconstructions(model: VQVAE, images: torch.Tensor, path: str | Path, n: int = 8) -> Path:
    """A PNG (written atomically): the first ``n`` images on top, their reconstructions below."""
    from partgm.images.grid import save_image_grid

    originals = images[:n]
    pair = torch.cat([originals, model.decode(model.encode(originals))])
    pixels = ((pair.permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1).numpy()
    save_image_grid(pixels, path, nrow=len(originals), upscale=max(1, 64 // images.shape[-1]))
    return Path(path)


def train_vqvae_folder(
    folder: str | Path, out: str | Path, cfg: VQVAEConfig, size: int, steps: int, lr: float, seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None, val_fraction: float = 0.1,
) -> dict[str, Any]:
    """Train on ``folder``'s images (``val_fraction`` held out), write the VQ-VAE to ``out`` with
    ``quality.json`` (the held-out metrics) and ``reconstructions.png``; return the metrics with the
    numbers of images."""
    from partgm.fileio import atomic_write_json

    if size < cfg.downsample or size % cfg.downsample:
        raise PartgmError(f"--size {size} must be a positive multiple of --downsample {cfg.downsample}")
    images, _, _ = load_image_folder(folder, size, cfg.background)
    train, val = split_images(images, val_fraction, seed)
    model = train_vqvae(train, cfg, steps=steps, lr=lr, seed=seed, progress=progress,
                        validate=lambda m: evaluate_vqvae(m, val))
    quality = {"train_images": len(train), "val_images": len(val) if len(images) > 1 else 0,
               **evaluate_vqvae(model, val)}

    def reports(directory: Path) -> None:
        atomic_write_json(directory / QUALITY, quality)
        save_reconstructions(model, val, directory / PREVIEW)

    save_vqvae(model, out, reports)  # one unit: weights, config and their reports
    return quality
