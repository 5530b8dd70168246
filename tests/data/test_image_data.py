"""Image data: digits and VQ-tokenised folders prepared into PreparedData's memmap layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from partgm.data import PreparedData
from partgm.data.images import is_image_data, load_image_tokenizer, prepare_image_dataset
from partgm.errors import PartgmError
from partgm.images.digits import load_digit_tokens
from partgm.images.vqvae import VQVAE, VQVAEConfig, save_vqvae
from partgm.resolve import resolve_config
from partgm.runs import prepare_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_digits_prepared_as_labelled_grids(tmp_path):
    cfg = resolve_config(overrides=["data.corpus=digits", f"data.cache_dir={tmp_path}", "data.val_fraction=0.1"])
    prepared, data = prepare_data(cfg, progress=False)
    assert prepared.data.length == 64 and cfg.data.length == 128  # fixed by the source, in a new config
    h = data.header
    assert (h["grid"], h["vocab_size"], h["num_classes"], h["bos_id"], h["length"]) == ([8, 8], 17, 10, None, 64)
    assert h["tokenizer"] is None and h["image"]["kind"] == "digits"
    assert len(data.train) + len(data.val) == 1797 and len(data.val) == 180
    tokens, _ = load_digit_tokens()
    rows = {tuple(r) for r in tokens.tolist()}
    assert all(tuple(r) in rows for r in np.asarray(data.val).tolist())
    assert data.labels["train"].dtype == np.int64 and set(np.asarray(data.labels["val"]).tolist()) <= set(range(10))
    _, again = prepare_data(cfg, progress=False)  # reused, not rebuilt
    assert again.path == data.path and (data.path / "train.bin").stat().st_mtime_ns == (
        again.path / "train.bin").stat().st_mtime_ns
    reloaded = PreparedData.load(data.path)
    assert np.array_equal(reloaded.train, data.train)


def test_text_corpora_are_not_image_data():
    assert not is_image_data("kjv", "gpt2") and not is_image_data("corpus.txt", "bpe-512")
    assert is_image_data("digits", "gpt2") and is_image_data("folder", "vq:dir")


@pytest.fixture
def folder_and_vq(tmp_path):
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(hidden=8, codebook_size=32, code_dim=4, downsample=4)).eval()
    save_vqvae(vq, tmp_path / "vq")
    return folder, tmp_path / "vq"


def test_folder_through_vq_tokenizer(tmp_path, folder_and_vq):
    folder, vq_dir = folder_and_vq
    data = prepare_image_dataset(str(folder), f"vq:{vq_dir}", 16, 0.3, tmp_path / "cache", progress=False)
    h = data.header
    assert (h["grid"], h["vocab_size"], h["num_classes"], h["class_names"]) == ([4, 4], 32, 2, ["cat", "dog"])
    assert h["image"] == {"kind": "vq", "size": 16, "downsample": 4}
    assert len(data.train) + len(data.val) == 6 and int(np.asarray(data.train).max()) < 32
    _, size, ds = load_image_tokenizer(f"vq:{vq_dir}")
    assert (size, ds) == (32, 4)
    with pytest.raises(PartgmError, match="square"):
        prepare_image_dataset(str(folder), f"vq:{vq_dir}", 15, 0.3, tmp_path / "cache", progress=False)
    with pytest.raises(PartgmError, match="vq:DIR or llamagen:PATH"):
        load_image_tokenizer("vqx:foo")
    assert json.loads((data.path / "header.json").read_text())["input_hash"] == h["input_hash"]
