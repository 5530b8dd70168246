"""A PNG grid of images, written atomically."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from partgm.errors import PartgmError
from partgm.fileio import atomic_write_bytes

_PAD = 1  # pixels of white between cells
_LABEL_WIDTH = 40  # pixels of left margin when rows are labelled


def save_image_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int,
    upscale: int = 4,
    row_labels: Sequence[str] | None = None,
) -> None:
    """Write ``images`` (``[N, h, w]`` grey or ``[N, h, w, 3]`` RGB floats in [0, 1]) as a PNG grid of
    ``nrow`` images per row, each enlarged ``upscale`` times (nearest neighbour). ``row_labels``, one per
    grid row, are written in a left margin."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise PartgmError(f"expected images [N, h, w] or [N, h, w, 3], got shape {list(images.shape)}")
    n, h, w, _ = images.shape
    rows = -(-n // nrow)
    if row_labels is not None and len(row_labels) != rows:
        raise PartgmError(f"{len(row_labels)} row labels for {rows} grid rows")
    cell_h, cell_w = h * upscale + _PAD, w * upscale + _PAD
    left = _LABEL_WIDTH if row_labels is not None else 0
    canvas = np.full((rows * cell_h + _PAD, left + nrow * cell_w + _PAD, 3), 255, dtype=np.uint8)
    pixels = np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)
    pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    for i, img in enumerate(pixels):
        y, x = _PAD + (i // nrow) * cell_h, left + _PAD + (i % nrow) * cell_w
        canvas[y : y + h * upscale, x : x + w * upscale] = img
    picture = Image.fromarray(canvas)
    if row_labels is not None:
        draw = ImageDraw.Draw(picture)
        for r, label in enumerate(row_labels):
            draw.text((2, r * cell_h + cell_h // 2 - 5), str(label), fill=(0, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
