"""The bundled 8x8 digits as tokens."""

from __future__ import annotations

import numpy as np
import pytest

from partgm.errors import PartgmError
from partgm.images.digits import load_digit_tokens, tokens_to_images


def test_load_digit_tokens_shapes_and_ranges():
    tokens, labels = load_digit_tokens()
    assert tokens.shape == (1797, 64) and tokens.dtype == np.uint8 and tokens.max() == 16
    assert labels.shape == (1797,) and labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    coarse, _ = load_digit_tokens(levels=4)
    assert coarse.max() == 3
    with pytest.raises(PartgmError, match="levels"):
        load_digit_tokens(levels=1)


def test_tokens_to_images_round_trip():
    tokens, _ = load_digit_tokens()
    images = tokens_to_images(tokens[:5], 17, 8, 8)
    assert images.shape == (5, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert np.array_equal(np.rint(images * 16).astype(np.uint8).reshape(5, 64), tokens[:5])
    with pytest.raises(PartgmError, match="shape"):
        tokens_to_images(tokens[:5], 17, 4, 4)
