"""The LlamaGen VQ tokenizer (``VQ-8``, checkpoint ``vq_ds8_c2i.pt``) used by MaskGIT and PGM on ImageNet.

Module and parameter names follow ``tokenizer/tokenizer_image/vq_model.py`` of FoundationVision/LlamaGen so
that the released checkpoint's ``model`` state dict loads with ``strict=True``. Its training-only
``quantize.codebook_used`` buffer (recent code usage) is dropped on load. Default config: 16,384 codes
of dim 8 (l2-normalised), ch 128, ch_mult (1, 2, 2, 4) (three halvings: 256x256 -> 32x32 tokens),
z_channels 256, 2 res blocks per level, GroupNorm(32 groups), attention at the lowest resolution.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from partgm.errors import PartgmError

_TRAINING_ONLY_KEYS = ("quantize.codebook_used",)


@dataclass(frozen=True)
class LlamaGenVQConfig:
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    ch: int = 128  # must be a multiple of 32 (GroupNorm)
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    z_channels: int = 256
    num_res_blocks: int = 2

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.nin_shortcut(x) + self.conv2(F.silu(self.norm2(h)))


class AttnBlock(nn.Module):
    """Single-head self-attention over the ``h*w`` positions, residual."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(c_in: int, c_out: int, n_blocks: int, attn: bool) -> nn.Module:
    level = nn.Module()
    level.res = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(n_blocks))
    level.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(n_blocks if attn else 0))
    return level


def _run_level(level: nn.Module, h: torch.Tensor) -> torch.Tensor:
    for i, res in enumerate(level.res):
        h = res(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    def __init__(self, cfg: LlamaGenVQConfig) -> None:
        super().__init__()
        chans = [cfg.ch * m for m in cfg.ch_mult]
        last = len(chans) - 1
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        for i, c in enumerate(chans):
            level = _level(cfg.ch if i == 0 else chans[i - 1], c, cfg.num_res_blocks, attn=i == last)
            if i != last:
                level.downsample = Downsample(c)
            self.conv_blocks.append(level)
        self.mid = nn.ModuleList(
            [ResnetBlock(chans[-1], chans[-1]), AttnBlock(chans[-1]), ResnetBlock(chans[-1], chans[-1])]
        )
        self.norm_out = _norm(chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: LlamaGenVQConfig) -> None:
        super().__init__()
        chans = [cfg.ch * m for m in cfg.ch_mult]
        c = chans[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(chans))):
            level = _level(c, chans[i], cfg.num_res_blocks + 1, attn=i == len(chans) - 1)
            c = chans[i]
            if i != 0:
                level.upsample = Upsample(c)
            self.conv_blocks.append(level)
        self.norm_out = _norm(c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, cfg: LlamaGenVQConfig) -> None:
        super().__init__()
        self.l2_norm = cfg.codebook_l2_norm
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        nn.init.uniform_(self.embedding.weight, -1 / cfg.codebook_size, 1 / cfg.codebook_size)

    def codebook(self) -> torch.Tensor:
        """``[K, D]`` code vectors (l2-normalised when configured)."""
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w


class LlamaGenVQ(nn.Module):
    """images ``[B, 3, H, W]`` in [-1, 1] <-> codes ``[B, H/ds, W/ds]``, ds = ``config.downsample``."""

    def __init__(self, config: LlamaGenVQConfig = LlamaGenVQConfig()) -> None:
        super().__init__()
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantize = VectorQuantizer(config)
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` in [-1, 1] -> codes ``[B, H/ds, W/ds]`` long (nearest code)."""
        z = self.quant_conv(self.encoder(images)).permute(0, 2, 3, 1)
        if self.quantize.l2_norm:
            z = F.normalize(z, dim=-1)
        e = self.quantize.codebook()
        dist = z.pow(2).sum(-1, keepdim=True) + e.pow(2).sum(-1) - 2 * z @ e.T
        return dist.argmin(-1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, h, w]`` (clamped into the codebook) -> images ``[B, 3, h*ds, w*ds]`` in [-1, 1]."""
        z_q = self.quantize.codebook()[codes.clamp(0, self.config.codebook_size - 1)].permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(z_q)).clamp(-1, 1)


def config_from_state(state: dict[str, torch.Tensor]) -> LlamaGenVQConfig:
    """The architecture a LlamaGen VQ state dict was built with, read from its shapes: ``ch`` (the first
    conv), ``ch_mult`` (each encoder level's output channels / ch: VQ-8 (1, 2, 2, 4), VQ-16
    (1, 1, 2, 2, 4)), res blocks per level, ``z_channels`` and the codebook's size and dim."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise PartgmError(f"not a LlamaGen VQ state dict: '{key}' is missing")
        return tuple(state[key].shape)

    ch = shape("encoder.conv_in.weight")[0]
    n_levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.conv_blocks."))
    n_res = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.conv_blocks.0.res."))
    mult = tuple(shape(f"encoder.conv_blocks.{i}.res.0.conv2.weight")[0] // ch for i in range(n_levels))
    size, dim = shape("quantize.embedding.weight")
    return LlamaGenVQConfig(codebook_size=size, codebook_embed_dim=dim, ch=ch, ch_mult=mult,
                            z_channels=shape("encoder.conv_out.weight")[0], num_res_blocks=n_res)


def load_llamagen_vq(path: str | Path, config: LlamaGenVQConfig | None = None) -> LlamaGenVQ:
    """Load a LlamaGen VQ checkpoint (``torch.save`` of a dict whose ``"model"`` is the state dict; read
    with ``weights_only=True``, allowing the ``argparse.Namespace`` of training args) into eval mode.
    ``config`` None: read from the state dict (``config_from_state``: VQ-8 and VQ-16 alike)."""
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"LlamaGen VQ checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many types on a damaged file
        raise PartgmError(f"cannot read LlamaGen VQ checkpoint {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise PartgmError(f"LlamaGen VQ checkpoint {path} has no 'model' state dict")
    state = {k: v for k, v in ckpt["model"].items() if k not in _TRAINING_ONLY_KEYS}
    if config is None:
        config = config_from_state(state)
    expected = (config.codebook_size, config.codebook_embed_dim)
    codebook = state.get("quantize.embedding.weight")
    if codebook is not None and tuple(codebook.shape) != expected:
        raise PartgmError(
            f"LlamaGen VQ codebook in {path} is {list(codebook.shape)}, expected {list(expected)}"
        )
    model = LlamaGenVQ(config)
    names = set(model.state_dict())
    missing, unexpected = sorted(names - set(state)), sorted(set(state) - names)
    if missing or unexpected:
        raise PartgmError(
            f"LlamaGen VQ checkpoint {path} does not match the architecture: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PartgmError(f"LlamaGen VQ checkpoint {path}: {str(e).splitlines()[-1].strip()}") from None
    return model.eval()
