"""The digits classifier and FID-digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from partgm.errors import PartgmError
from partgm.images.digits import load_digit_tokens
from partgm.images.digits_classifier import (
    class_accuracy,
    digits_fid,
    features,
    load_digits_classifier,
    save_digits_classifier,
    train_digits_classifier,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    tokens, labels = load_digit_tokens()
    perm = np.random.default_rng(0).permutation(len(tokens))
    train, held_out = perm[:1400], perm[1400:]
    model = train_digits_classifier(tokens[train], labels[train], steps=150, seed=0)
    return model, tokens, labels, train, held_out


def test_held_out_accuracy(trained):
    model, tokens, labels, _, held_out = trained
    assert class_accuracy(model, tokens[held_out], labels[held_out]) >= 0.95


def test_fid_digits_separates_real_from_random(trained):
    model, tokens, _, _, _ = trained
    perm = np.random.default_rng(1).permutation(len(tokens))
    half_a, half_b = tokens[perm[:898]], tokens[perm[898:]]
    noise = np.random.default_rng(2).integers(0, 17, size=half_a.shape, dtype=np.uint8)
    real_vs_real, random_vs_real = digits_fid(model, half_a, half_b), digits_fid(model, noise, half_b)
    assert 0 <= real_vs_real < 0.05 * random_vs_real
    assert features(model, half_a).shape == (898, 64)


def test_save_load_round_trip(trained, tmp_path):
    model, tokens, _, _, _ = trained
    save_digits_classifier(model, tmp_path / "clf.safetensors")
    loaded = load_digits_classifier(tmp_path / "clf.safetensors")
    assert torch.equal(features(loaded, tokens[:50]), features(model, tokens[:50]))
    with pytest.raises(PartgmError, match="does not exist"):
        load_digits_classifier(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(PartgmError, match="corrupt digits classifier"):
        load_digits_classifier(tmp_path / "bad.safetensors")
