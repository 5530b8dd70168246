"""The small VQ-VAE: training, encode/decode, save/load and image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from partgm.errors import PartgmError
from partgm.images.vqvae import VQVAE, VQVAEConfig, load_image_folder, load_vqvae, save_vqvae, train_vqvae

torch.set_num_threads(1)
TINY = VQVAEConfig(hidden=16, codebook_size=32, code_dim=4)


def _blocky_images(n: int = 64, size: int = 16) -> torch.Tensor:
    """Random images made of 4x4 flat blocks, in [-1, 1]."""
    torch.manual_seed(0)
    blocks = torch.rand(n, 3, size // 4, size // 4) * 2 - 1
    return blocks.repeat_interleave(4, 2).repeat_interleave(4, 3)


def test_training_reduces_the_reconstruction_loss():
    recon = []
    train_vqvae(
        _blocky_images(),
        TINY,
        steps=120,
        lr=3e-3,
        batch_size=16,
        progress=lambda s, l: recon.append(l["recon"]),
    )
    assert len(recon) == 120
    assert np.mean(recon[-20:]) < 0.85 * np.mean(recon[:10])


@pytest.mark.parametrize("downsample,l2_norm", [(4, False), (8, True)])
def test_encode_decode_shapes(downsample, l2_norm):
    model = VQVAE(
        VQVAEConfig(hidden=8, codebook_size=16, code_dim=4, downsample=downsample, l2_norm=l2_norm)
    ).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = model.encode(images)
    assert codes.shape == (2, 16 // downsample, 16 // downsample) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 16
    decoded = model.decode(codes)
    assert decoded.shape == (2, 3, 16, 16) and decoded.dtype == torch.float32 and decoded.abs().max() <= 1
    recon, losses = model(images)
    assert recon.shape == images.shape and set(losses) == {"recon", "codebook", "commit", "loss"}


def test_bad_downsample_is_a_user_error():
    with pytest.raises(PartgmError, match="downsample"):
        VQVAEConfig(downsample=2)


def test_save_load_round_trip_gives_identical_codes(tmp_path):
    images = _blocky_images(8)
    model = train_vqvae(images, TINY, steps=3, batch_size=4)
    save_vqvae(model, tmp_path / "vq")
    loaded = load_vqvae(tmp_path / "vq")
    assert loaded.cfg == model.cfg
    assert torch.equal(loaded.encode(images), model.encode(images))
    assert torch.equal(loaded.decode(model.encode(images)), model.decode(model.encode(images)))


def test_load_errors(tmp_path):
    with pytest.raises(PartgmError, match="no config.json"):
        load_vqvae(tmp_path)
    save_vqvae(VQVAE(TINY), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PartgmError, match="corrupt VQ-VAE weights"):
        load_vqvae(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(PartgmError, match="corrupt VQ-VAE config"):
        load_vqvae(tmp_path)


def _write_png(path, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 12, 3), color, dtype=np.uint8)).save(path)


def test_load_image_folder_with_classes_and_flat(tmp_path):
    _write_png(tmp_path / "cats" / "a.png", 255)
    _write_png(tmp_path / "cats" / "b.PNG", 0)
    _write_png(tmp_path / "dogs" / "c.png", 128)
    images, labels, names = load_image_folder(tmp_path, 8)
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32
    assert names == ["cats", "dogs"] and labels.tolist() == [0, 0, 1]
    assert images[0].min() == pytest.approx(1.0) and images[1].max() == pytest.approx(-1.0)
    flat, flat_labels, flat_names = load_image_folder(tmp_path / "cats", 4)
    assert flat.shape == (2, 3, 4, 4) and flat_labels is None and flat_names == []


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(PartgmError, match="does not exist"):
        load_image_folder(tmp_path / "missing", 8)
    with pytest.raises(PartgmError, match="no .png/.jpg images"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "broken.png").write_bytes(b"junk")
    with pytest.raises(PartgmError, match="cannot read image"):
        load_image_folder(tmp_path, 8)
