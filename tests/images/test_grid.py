"""PNG image grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from partgm.errors import PartgmError
from partgm.images.grid import save_image_grid


def test_grey_grid_has_the_expected_size(tmp_path):
    path = tmp_path / "sub" / "grid.png"
    save_image_grid(np.random.rand(6, 8, 8), path, nrow=3, upscale=2)
    png = np.asarray(Image.open(path))
    assert png.shape == (2 * 17 + 1, 3 * 17 + 1, 3)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_rgb_grid_with_row_labels(tmp_path):
    path = tmp_path / "grid.png"
    images = np.zeros((5, 4, 4, 3))
    images[..., 0] = 1.0
    save_image_grid(images, path, nrow=4, upscale=4, row_labels=["a", "b"])
    png = np.asarray(Image.open(path))
    assert png.shape == (2 * 17 + 1, 40 + 4 * 17 + 1, 3)
    assert tuple(png[1, 41]) == (255, 0, 0)  # first cell is red
    with pytest.raises(PartgmError, match="row labels"):
        save_image_grid(images, path, nrow=4, row_labels=["a"])
