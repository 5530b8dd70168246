"""Image data as token grids, prepared into the same memmap layout as text (``PreparedData`` reads both).

Sources (``data.corpus``): ``digits`` (scikit-learn's bundled 8x8 digits, 17 grey levels as token ids
0..16, labels 0..9, no tokenizer), or a folder of images (``class_name/*.png|jpg``, or one flat folder
without labels) read through a VQ tokenizer given as ``data.tokenizer``:

- ``vq:DIR``: a small VQ-VAE written by ``partgm vq train`` (``DIR/config.json`` + ``model.safetensors``);
- ``llamagen:PATH``: LlamaGen's VQ-8 checkpoint (``vq_ds8_c2i.pt``, 16,384 codes, downsampling 8).

For a folder, ``data.length`` is the number of codes per image (a square: 256 = 16 x 16 codes, i.e.
64 x 64 images at downsampling 4); for the digits it is always 64. The directory holds ``train.bin`` /
``val.bin`` (uint16 ``[rows, length]``, raster order), ``{split}.labels.bin`` (int64, class-conditional
data) and ``header.json`` with ``grid``, ``num_classes``, ``bos_id`` None; it is cached under a hash of
its inputs and rebuilt only when they change, like text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from partgm.data.corpora import _files_fingerprint
from partgm.data.prepare import FORMAT_VERSION, PreparedData, _reusable, _val_mask, publish_dataset
from partgm.errors import PartgmError
from partgm.registry import Registry

DIGITS = "digits"
_VQ_PREFIXES = ("vq:", "llamagen:")


class ImageTokenizer(Protocol):
    """What a VQ tokenizer offers: images ``[B, 3, H, W]`` in [-1, 1] <-> codes ``[B, h, w]``."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, codes: torch.Tensor) -> torch.Tensor: ...


def is_image_data(corpus: str, tokenizer: str) -> bool:
    """True for the registered image sources and for any corpus read through a VQ tokenizer."""
    return corpus in IMAGE_SOURCES or tokenizer.startswith(_VQ_PREFIXES)


# ------------------------------------------------------------------------------------- VQ tokenizers


def load_image_tokenizer(spec: str) -> tuple[ImageTokenizer, int, int]:
    """(tokenizer in eval mode, codebook size, downsampling factor) for ``vq:DIR`` or ``llamagen:PATH``."""
    kind, _, path = spec.partition(":")
    if kind == "vq" and path:
        from partgm.images.vqvae import load_vqvae

        model = load_vqvae(path)
        return model, model.cfg.codebook_size, model.cfg.downsample
    if kind == "llamagen" and path:
        from partgm.images.llamagen_vq import load_llamagen_vq

        model = load_llamagen_vq(path)
        return model, model.config.codebook_size, model.config.downsample
    raise PartgmError(f"image tokenizer '{spec}' must be vq:DIR or llamagen:PATH")


def _tokenizer_fingerprint(spec: str) -> str:
    path = Path(spec.partition(":")[2]).expanduser()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if not all(f.is_file() for f in files):
        raise PartgmError(f"image tokenizer '{spec}': {path} not found")
    return f"{spec}:{_files_fingerprint(files)}"


# ------------------------------------------------------------------------------------------- sources


class ImageSource(Protocol):
    """A registered image data set: ``fingerprint`` (changes with its content) and ``load`` ->
    (tokens uint16 ``[N, h*w]``, labels int64 ``[N]`` or None, extra header fields incl. ``grid``,
    ``vocab_size``, ``num_classes``)."""

    def fingerprint(self, tokenizer: str, length: int) -> str: ...

    def load(self, tokenizer: str, length: int, progress: bool) -> tuple[np.ndarray, np.ndarray | None, dict]: ...


class DigitsSource:
    """scikit-learn's 1,797 8x8 digits: raw grey levels 0..16 as tokens, labels 0..9."""

    length = 64

    def fingerprint(self, tokenizer: str, length: int) -> str:
        try:
            version = metadata.version("scikit-learn")
        except metadata.PackageNotFoundError:
            raise PartgmError("the digits data set needs scikit-learn: pip install 'partgm[images]'") from None
        return f"digits sklearn {version} levels 17"

    def load(self, tokenizer, length, progress):
        from partgm.images.digits import DIGITS_LEVELS, load_digit_tokens

        tokens, labels = load_digit_tokens()
        header = {"grid": [8, 8], "vocab_size": DIGITS_LEVELS, "num_classes": 10, "tokenizer": None,
                  "image": {"kind": "digits", "levels": DIGITS_LEVELS}, "class_names": [str(i) for i in range(10)]}
        return tokens.astype(np.uint16), labels, header


IMAGE_SOURCES: Registry[ImageSource] = Registry("image source", "partgm.image_sources")
IMAGE_SOURCES.register(DIGITS, DigitsSource())


def _folder_grid(length: int) -> int:
    side = math.isqrt(length)
    if side * side != length:
        raise PartgmError(
            f"data.length={length} must be a square number of codes per image for image folders "
            "(e.g. 256 = 16 x 16 codes)"
        )
    return side


def _folder_fingerprint(folder: str, tokenizer: str, length: int) -> str:
    from partgm.images.vqvae import IMAGE_SUFFIXES

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PartgmError(f"image folder '{folder}' not found")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return f"{_files_fingerprint(files)} {_tokenizer_fingerprint(tokenizer)} side {_folder_grid(length)}"


def _load_folder(folder: str, tokenizer: str, length: int, progress: bool):
    from partgm.images.vqvae import load_image_folder

    side = _folder_grid(length)
    vq, codebook_size, downsample = load_image_tokenizer(tokenizer)
    background = getattr(getattr(vq, "cfg", None), "background", "white")  # as the VQ-VAE was trained
    images, labels, class_names = load_image_folder(folder, side * downsample, background)
    with torch.no_grad():
        codes = torch.cat([vq.encode(chunk).reshape(len(chunk), -1) for chunk in images.split(64)])
    if codes.shape[1] != length:
        raise PartgmError(f"tokenizer '{tokenizer}' gave {codes.shape[1]} codes per image, not {length}")
    header = {"grid": [side, side], "vocab_size": codebook_size, "num_classes": len(class_names),
              "tokenizer": tokenizer, "class_names": class_names,
              "image": {"kind": "vq", "size": side * downsample, "downsample": downsample}}
    return codes.numpy().astype(np.uint16 if codebook_size <= 2**16 else np.uint32), (
        None if labels is None else labels.numpy()), header


# ------------------------------------------------------------------------------------------ prepare


def image_length(corpus: str, length: int) -> int:
    """The sequence length of an image source: fixed by a registered source, else ``length``."""
    return getattr(IMAGE_SOURCES.get(corpus), "length", length) if corpus in IMAGE_SOURCES else length


def prepare_image_dataset(
    corpus: str, tokenizer: str, length: int, val_fraction: float, cache_dir: str | Path,
    seed: int = 0, progress: bool = True,
) -> PreparedData:
    """Tokenise image data into ``cache_dir/<slug>-<hash12>`` or reuse it when its inputs are unchanged;
    built under a temporary name and renamed at the end, as text is."""
    if not 0.0 < val_fraction < 1.0:
        raise PartgmError(f"val_fraction={val_fraction} must be in (0, 1)")
    source = IMAGE_SOURCES.get(corpus) if corpus in IMAGE_SOURCES else None
    length = image_length(corpus, length)
    fingerprint: Callable[[], str] = (
        (lambda: source.fingerprint(tokenizer, length)) if source else (lambda: _folder_fingerprint(corpus, tokenizer, length))
    )
    inputs = {"format_version": FORMAT_VERSION, "images": fingerprint(), "length": length,
              "val_fraction": val_fraction, "seed": seed}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir)
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", f"images-{Path(corpus).name}-L{length}").strip("-")[:48]
    out = cache_dir / f"{slug}-{key[:12]}"
    existing = _reusable(out, key)
    if existing is not None:
        return existing
    tokens, labels, extra = (source.load(tokenizer, length, progress) if source
                             else _load_folder(corpus, tokenizer, length, progress))
    if len(tokens) < 2:
        raise PartgmError(f"image data '{corpus}' has {len(tokens)} image(s); a train/validation split needs 2")
    is_val = _val_mask(len(tokens), val_fraction, seed)

    def build(tmp: Path) -> dict:
        splits = {}
        for split, rows in (("train", ~is_val), ("val", is_val)):
            (tmp / f"{split}.bin").write_bytes(np.ascontiguousarray(tokens[rows]).tobytes())
            if labels is not None and extra["num_classes"]:
                (tmp / f"{split}.labels.bin").write_bytes(labels[rows].astype(np.int64).tobytes())
            splits[split] = {"rows": int(rows.sum()), "tokens": int(rows.sum()) * length, "documents": int(rows.sum())}
        return {"format_version": FORMAT_VERSION, "input_hash": key, "corpus": corpus, **extra,
                "bos_id": None, "eos_id": None, "dtype": tokens.dtype.name, "length": length,
                "splits": splits, "val_fraction": val_fraction, "seed": seed}

    return publish_dataset(cache_dir, out, key, build)

