"""Every PIL mode reads as RGB (transparency over a background), vq train reports its quality, and an
image-folder run with one validation image trains to the end (issues 23, 24)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from partgm.cli import main
from partgm.errors import PartgmError
from partgm.images.pixels import parse_background, read_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def _rgba_icon() -> Image.Image:
    """A red square on a fully transparent 8x8 canvas (the left half)."""
    arr = np.zeros((8, 8, 4), dtype=np.uint8)
    arr[:, :4] = (255, 0, 0, 255)
    return Image.fromarray(arr, "RGBA")


def _palette_icon() -> Image.Image:
    """The same icon as a palette image whose index 0 is transparent (saved with transparency=0)."""
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 4, 8))
    return img


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_the_background(tmp_path, mode):
    img = _rgba_icon()
    if mode == "LA":
        img = img.convert("LA")
    path = _save(_palette_icon(), tmp_path / "P.png", transparency=0) if mode == "P" else (
        _save(img, tmp_path / f"{mode}.png"))
    white = read_image(path, 8)
    assert np.allclose(white[:, 6:], 255)  # the transparent half is the background, not black
    black = read_image(path, 8, parse_background("black"))
    assert np.allclose(black[:, 6:], 0)
    assert white[:, :2].mean() < 255 if mode != "LA" else True  # the drawn half keeps its colour


@pytest.mark.parametrize("mode,value,expected", [
    ("L", 100, 100), ("1", 1, 255), ("I;16", 65535, 255), ("I;16", 257 * 40, 40), ("I", 65535, 255),
    ("I", 100, 100), ("F", 0.5, 127.5), ("CMYK", (0, 0, 0, 0), 255), ("RGB", (10, 20, 30), 20),
])
def test_every_mode_reads_as_rgb(tmp_path, mode, value, expected):
    img = Image.new(mode, (6, 6), value)
    path = _save(img, tmp_path / f"img-{mode.replace(';', '')}.tiff")
    pixels = read_image(path, 4)
    assert pixels.shape == (4, 4, 3)
    assert pixels.mean() == pytest.approx(expected, abs=1.0)


def test_bad_background_and_unreadable_file(tmp_path):
    with pytest.raises(PartgmError, match="#RRGGBB"):
        parse_background("pink")
    assert parse_background("#ff8000") == (255, 128, 0)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(PartgmError, match="cannot read image"):
        read_image(tmp_path / "x.png", 4)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """One class folder of mixed modes: RGBA icons, grey, 16-bit, palette; a unicode name."""
    root = tmp_path_factory.mktemp("mixed") / "bilder-ünï"
    (root / "icons").mkdir(parents=True)
    _save(_rgba_icon(), root / "icons" / "a.png")
    _save(_rgba_icon().convert("LA"), root / "icons" / "b.png")
    _save(Image.new("I;16", (8, 8), 30000), root / "icons" / "c.png")
    _save(_palette_icon(), root / "icons" / "d.png", transparency=0)
    _save(Image.new("L", (8, 8), 90), root / "icons" / "e.png")
    return root


def test_vq_train_reports_quality_and_preview(tmp_path, mixed_folder, capsys):
    out = tmp_path / "vq"
    assert main(["vq", "train", str(mixed_folder), "--out", str(out), "--size", "8", "--steps", "3",
                 "--hidden", "8", "--codebook-size", "16", "--code-dim", "4"]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "codes used" in text
    quality = json.loads((out / "quality.json").read_text())
    assert quality["val_images"] == 1 and quality["train_images"] == 4
    assert quality["val_psnr"] > 0 and 1 <= quality["codes_used"] <= 16 and quality["code_perplexity"] >= 1
    last = json.loads([line for line in text.splitlines() if line.startswith("{")][-1])
    assert {"val_loss", "val_psnr", "codes_used_pct"} <= set(last)
    with Image.open(out / "reconstructions.png") as img:
        assert img.size[0] > 8 and img.mode == "RGB"
    assert json.loads((out / "config.json").read_text())["background"] == "white"


def test_image_folder_run_with_one_validation_image_ends_saved(tmp_path, mixed_folder, capsys):
    vq = tmp_path / "vq"
    assert main(["vq", "train", str(mixed_folder), "--out", str(vq), "--size", "8", "--steps", "1",
                 "--hidden", "8", "--codebook-size", "16", "--code-dim", "4"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--algo", "pgm-image", "--run-dir", str(run), f"data.cache_dir={tmp_path / 'cache'}",
                 f"data.corpus={mixed_folder}", f"data.tokenizer=vq:{vq}", "data.length=4", "data.val_fraction=0.2",
                 "model.hidden_size=16", "model.n_heads=2", "model.cond_dim=16", "model.n_encoder_blocks=1",
                 "model.n_decoder_blocks=1", "train.steps=2", "train.global_batch=2", "train.eval_every=1",
                 "train.save_every=2", "train.progress=false"]) == 0
    err = capsys.readouterr().err
    assert "no error bar" in err
    assert (run / "checkpoints" / "step_00000002").is_dir()  # the last save happened
    assert main(["train", "--algo", "pgm-image", "--run-dir", str(tmp_path / "r2"), f"data.corpus={mixed_folder}",
                 f"data.cache_dir={tmp_path / 'cache'}", f"data.tokenizer=vq:{vq}", "data.length=4",
                 "data.val_fraction=0.9999"]) == 2
    assert "leaves none for training" in capsys.readouterr().err
