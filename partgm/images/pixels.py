"""Reading one image file as RGB pixels, whatever its PIL mode: transparency is composited over a
background colour (white by default), high-bit-depth grey is scaled to 8 bits, palettes and CMYK are
converted. Without this, ``img.convert("RGB")`` turns icons drawn on transparency black."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from partgm.errors import PartgmError

_NAMED = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}
BACKGROUND_HELP = "white, black, grey or #RRGGBB"


def parse_background(spec: str) -> tuple[int, int, int]:
    """``white`` | ``black`` | ``grey`` | ``#RRGGBB`` -> an (r, g, b) triple of 0..255."""
    text = str(spec).strip().lower()
    if text in _NAMED:
        return _NAMED[text]
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    raise PartgmError(f"background '{spec}' is not {BACKGROUND_HELP}")


def _grey_float(img) -> np.ndarray:
    """A high-bit-depth single-channel image (I;16*, I, F) -> float32 [H, W] on a 0..255 scale."""
    arr = np.asarray(img, dtype=np.float32)
    if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 257.0  # 16-bit values
    elif img.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0  # floats in [0, 1]
    return np.clip(np.nan_to_num(arr), 0, 255)


def to_rgb(img, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A PIL image of any mode -> float32 ``[H, W, 3]`` in 0..255, alpha composited over ``background``."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        return np.repeat(_grey_float(img)[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in img.info) or (
        mode in ("L", "RGB") and "transparency" in img.info)
    try:
        rgba = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32)
    except ValueError as e:
        raise PartgmError(f"cannot convert an image of mode {mode} to RGB: {e}") from None
    if not has_alpha:
        return rgba
    alpha = rgba[..., 3:] / 255.0
    return rgba[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)


def read_image(path: Path, size: int, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """The image at ``path`` as float32 ``[size, size, 3]`` in 0..255: composited (``to_rgb``), then resized
    (bicubic)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img, background)
    except (UnidentifiedImageError, OSError) as e:
        raise PartgmError(f"cannot read image {path}: {e}") from None
    picture = Image.fromarray(np.rint(np.clip(rgb, 0, 255)).astype(np.uint8))
    return np.asarray(picture.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
