"""scikit-learn's bundled 8x8 handwritten digits as token grids (no download)."""

from __future__ import annotations

import numpy as np

from partgm.errors import PartgmError

DIGITS_LEVELS = 17  # the raw pixels are integers 0..16


def load_digit_tokens(levels: int = DIGITS_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as tokens: uint8 ``[1797, 64]`` (row-major 8x8, values ``0..levels-1``) and
    labels int64 ``[1797]``. ``levels=17`` keeps the raw grey levels; fewer levels requantise them."""
    if not 2 <= levels <= DIGITS_LEVELS:
        raise PartgmError(f"digit levels must be between 2 and {DIGITS_LEVELS}, got {levels}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PartgmError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    pixels = data.data.astype(np.float64) / (DIGITS_LEVELS - 1)
    tokens = np.rint(pixels * (levels - 1)).astype(np.uint8)
    return tokens, data.target.astype(np.int64)


def tokens_to_images(tokens: np.ndarray, levels: int, height: int, width: int) -> np.ndarray:
    """Grey-level tokens ``[N, h*w]`` (row-major) -> float images ``[N, h, w]`` in [0, 1]."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != height * width:
        raise PartgmError(f"expected tokens of shape [N, {height * width}], got {list(tokens.shape)}")
    return (np.clip(tokens, 0, levels - 1).astype(np.float32) / (levels - 1)).reshape(-1, height, width)
