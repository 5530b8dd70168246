"""A small VQ-VAE image tokenizer trainable on CPU, and loading image folders for it.

Files written by ``save_vqvae``::

    DIR/config.json         VQVAEConfig fields
    DIR/model.safetensors   the state dict
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

from partgm.errors import PartgmError
from partgm.fileio import atomic_write_bytes, atomic_write_json, unit_directory
from partgm.images.pixels import parse_background, read_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class VQVAEConfig:
    channels: int = 3  # image channels
    hidden: int = 64  # conv width
    codebook_size: int = 256
    code_dim: int = 16
    downsample: int = 4  # 4 or 8: the token grid is (H / downsample, W / downsample)
    beta: float = 0.25  # commitment loss weight
    l2_norm: bool = False  # compare l2-normalised codes and encodings (cosine nearest code)
    background: str = "white"  # transparency is composited over it (pixels.parse_background), here and in data

    def __post_init__(self) -> None:
        if self.downsample not in (4, 8):
            raise PartgmError(f"VQ-VAE downsample must be 4 or 8, got {self.downsample}")
        parse_background(self.background)
        for name in ("channels", "hidden", "codebook_size", "code_dim"):
            _positive_int(f"VQ-VAE {name}", getattr(self, name))
        if not 0.0 <= self.beta < math.inf:
            raise PartgmError(f"VQ-VAE beta must be a finite number >= 0, got {self.beta}")


def _positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PartgmError(f"{what} must be a positive integer, got {value!r}")


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with the straight-through estimator."""

    def __init__(self, codebook_size: int, code_dim: int, beta: float, l2_norm: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1 / codebook_size, 1 / codebook_size)
        self.beta, self.l2_norm = beta, l2_norm

    def codebook(self) -> torch.Tensor:
        """``[K, D]`` code vectors as compared and decoded."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, h, w]`` -> code vectors ``[B, D, h, w]``."""
        return self.codebook()[codes].permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """z ``[B, D, h, w]`` -> (quantised z with straight-through gradient ``[B, D, h, w]``, codes
        ``[B, h, w]`` long, {"codebook": ||sg(z) - e||^2, "commit": beta ||z - sg(e)||^2})."""
        z = z.permute(0, 2, 3, 1)
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        codebook = self.codebook()
        codes = torch.cdist(z.reshape(-1, z.shape[-1]), codebook).argmin(-1).view(z.shape[:-1])
        z_q = codebook[codes]
        losses = {
            "codebook": F.mse_loss(z_q, z.detach()),
            "commit": self.beta * F.mse_loss(z, z_q.detach()),
        }
        z_q = z + (z_q - z).detach()
        return z_q.permute(0, 3, 1, 2), codes, losses


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class VQVAE(nn.Module):
    """Conv encoder (stride-2 convs) -> VectorQuantizer -> transposed-conv decoder."""

    def __init__(self, cfg: VQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_down, c, h = int(math.log2(cfg.downsample)), cfg.channels, cfg.hidden
        down = [nn.Conv2d(c if i == 0 else h, h, 4, stride=2, padding=1) for i in range(n_down)]
        self.encoder = nn.Sequential(
            *[m for conv in down for m in (conv, nn.ReLU())],
            _ResBlock(h),
            nn.ReLU(),
            nn.Conv2d(h, cfg.code_dim, 1),
        )
        up = [nn.ConvTranspose2d(h, h, 4, stride=2, padding=1) for _ in range(n_down)]
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, h, 3, padding=1),
            _ResBlock(h),
            *[m for conv in up for m in (nn.ReLU(), conv)],
            nn.ReLU(),
            nn.Conv2d(h, c, 3, padding=1),
        )
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.beta, cfg.l2_norm)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, C, H, W]`` in [-1, 1] -> codes ``[B, H/ds, W/ds]`` long."""
        return self.quantizer(self.encoder(images))[1]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, h, w]`` -> images ``[B, C, h*ds, w*ds]`` clamped to [-1, 1]."""
        codes = codes.clamp(0, self.cfg.codebook_size - 1)
        return self.decoder(self.quantizer.lookup(codes)).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images ``[B, C, H, W]`` -> (reconstruction ``[B, C, H, W]``, {"recon", "codebook", "commit",
        "loss": their sum})."""
        z_q, _, losses = self.quantizer(self.encoder(images))
        recon = self.decoder(z_q)
        losses["recon"] = F.mse_loss(recon, images)
        losses["loss"] = losses["recon"] + losses["codebook"] + losses["commit"]
        return recon, losses


def train_vqvae(
    images: torch.Tensor,
    cfg: VQVAEConfig,
    steps: int = 2000,
    lr: float = 2e-3,
    seed: int = 0,
    batch_size: int = 64,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    validate: Callable[[VQVAE], dict[str, float]] | None = None,
    eval_every: int = 100,
) -> VQVAE:
    """Train a VQ-VAE with Adam on ``images`` ``[N, C, H, W]`` in [-1, 1]; returns it in eval mode.

    The codebook starts from encodings of random training images (fewer dead codes than a uniform
    start). ``progress(step, losses)`` is called after every step; every ``eval_every`` steps and at the
    last one, ``losses`` also holds ``validate(model)``'s fields (the model in eval mode meanwhile), e.g.
    ``vq_quality.evaluate_vqvae`` on held-out images."""
    _positive_int("VQ-VAE training steps", steps)
    _positive_int("VQ-VAE batch_size", batch_size)
    if not 0.0 < lr < math.inf:
        raise PartgmError(f"VQ-VAE learning rate must be a finite positive number, got {lr}")
    side = images.shape[-1]
    if images.shape[-2] != side or side % cfg.downsample or len(images) == 0:
        raise PartgmError(f"VQ-VAE images must be square with a side that is a multiple of downsample "
                          f"{cfg.downsample}, got {len(images)} of {tuple(images.shape[-2:])}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = VQVAE(cfg)
    with torch.no_grad():
        z = model.encoder(images[torch.randint(len(images), (batch_size,), generator=gen)])
        z = z.permute(0, 2, 3, 1).reshape(-1, cfg.code_dim)
        model.quantizer.embedding.weight.copy_(z[torch.randint(len(z), (cfg.codebook_size,), generator=gen)])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        batch = images[torch.randint(len(images), (batch_size,), generator=gen)]
        _, losses = model(batch)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if progress is not None:
            record = {k: v.item() for k, v in losses.items()}
            if validate is not None and (step == steps or (eval_every > 0 and step % eval_every == 0)):
                record.update(validate(model.eval()))
                model.train()
            progress(step, record)
    return model.eval()


def save_vqvae(model: VQVAE, directory: str | Path, extra: Callable[[Path], None] | None = None) -> None:
    """Write ``directory`` (``config.json`` + ``model.safetensors``, and what ``extra(dir)`` adds) as a
    unit: a kill or an error leaves the previous directory (or none), never a new config beside old
    weights."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with unit_directory(directory) as tmp:
        atomic_write_json(tmp / "config.json", dataclasses.asdict(model.cfg))
        atomic_write_bytes(tmp / "model.safetensors", safetensors.torch.save(state))
        if extra is not None:
            extra(tmp)


def load_vqvae(directory: str | Path) -> VQVAE:
    """Load a VQ-VAE written by ``save_vqvae``, in eval mode."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise PartgmError(f"VQ-VAE directory {directory} has no {name}")
    try:
        cfg = VQVAEConfig(**json.loads((directory / "config.json").read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise PartgmError(f"corrupt VQ-VAE config {directory / 'config.json'}: {e}") from None
    try:
        state = safetensors.torch.load_file(directory / "model.safetensors")
    except (SafetensorError, OSError) as e:
        raise PartgmError(f"corrupt VQ-VAE weights {directory / 'model.safetensors'}: {e}") from None
    model = VQVAE(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise PartgmError(
            f"VQ-VAE weights in {directory} do not match its config: {e}".splitlines()[0]
        ) from None
    return model.eval()


def load_image_folder(
    path: str | Path, size: int, background: str = "white"
) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images of ``path/<class_name>/*.{png,jpg,jpeg}`` (labels = sorted class index) or, without
    subfolders, of ``path/*.{png,jpg,jpeg}`` (no labels), of any PIL mode (transparency composited over
    ``background``, see ``partgm.images.pixels``), resized to ``size x size`` (bicubic).

    Returns images float ``[N, 3, size, size]`` in [-1, 1], labels long ``[N]`` or None, and the class
    names (empty for a flat folder)."""
    root = Path(path)
    if not root.is_dir():
        raise PartgmError(f"image folder {root} does not exist")

    def image_files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and image_files(p))
    if class_names:
        files = [(f, i) for i, name in enumerate(class_names) for f in image_files(root / name)]
    else:
        files = [(f, -1) for f in image_files(root)]
    if not files:
        raise PartgmError(f"no .png/.jpg images in {root} or its class subfolders")
    rgb = parse_background(background)
    pixels = np.stack([read_image(f, size, rgb) for f, _ in files])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 127.5 - 1
    labels = torch.tensor([label for _, label in files], dtype=torch.long) if class_names else None
    return images, labels, class_names
