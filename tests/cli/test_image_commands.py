"""End to end through the CLI: train on the digits, sample a PNG grid, FID-digits, VQ training, bench."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from partgm.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["model.hidden_size=32", "model.n_heads=2", "model.cond_dim=32", "model.dropout=0.0", "train.steps=2",
        "train.global_batch=8", "train.eval_every=2", "train.eval_batches=1", "train.save_every=2",
        "train.progress=false", "data.corpus=digits", "data.val_fraction=0.1"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    run = root / "run"
    assert main(["train", "--algo", "pgm-image", "--run-dir", str(run), f"data.cache_dir={root / 'cache'}", *TINY,
                 "model.n_encoder_blocks=1", "model.n_decoder_blocks=1"]) == 0
    return run


def test_sample_writes_a_grid_per_class_and_codes(digits_run, capsys):
    out = digits_run / "grid"
    assert main(["sample", str(digits_run), "--steps", "4", "--num-samples", "3", "--class", "2", "--class", "7",
                 "--guidance", "1.5", "--sampler", "confidence", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == [2, 2, 2, 7, 7, 7]
    assert all(len(r["token_ids"]) == 64 and max(r["token_ids"]) <= 16 for r in records)
    with Image.open(out.with_suffix(".png")) as img:
        assert img.size[1] == 2 * (8 * 4 + 1) + 1  # two rows of 8x8 images upscaled 4x, 1-pixel gaps
    assert main(["sample", str(digits_run), "--class", "10"]) == 2
    assert "outside 0..9" in capsys.readouterr().err
    # the authors' sampler options
    assert main(["sample", str(digits_run), "--steps", "4", "--num-samples", "1", "--class", "3", "--top-k", "2",
                 "--randomize", "--sm-temp-min", "0.5", "--out", str(digits_run / "authors")]) == 0
    assert main(["sample", str(digits_run), "--sampler", "uniform", "--top-k", "2"]) == 2
    assert "apply to confidence and halton" in capsys.readouterr().err


def test_image_samples_are_never_replaced_without_overwrite(digits_run, tmp_path, capsys):
    args = ["sample", str(digits_run), "--steps", "2", "--num-samples", "1", "--class", "0", "--batch", "1"]
    (tmp_path / "x.jsonl").write_text("not yours")
    assert main([*args, "--out", str(tmp_path / "x")]) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "x.jsonl").read_text() == "not yours" and not (tmp_path / "x.png").exists()
    assert main([*args, "--out", str(tmp_path / "x"), "--overwrite"]) == 0
    samples = digits_run / "samples"
    before = {p.name for p in samples.iterdir()} if samples.is_dir() else set()
    assert main(args) == 0 and main(args) == 0  # the second takes the next free name
    assert sorted({p.name for p in samples.iterdir()} - before) == [
        "images-steps2-w0-seed0-2.jsonl", "images-steps2-w0-seed0-2.png", "images-steps2-w0-seed0.jsonl",
        "images-steps2-w0-seed0.png"]


def test_fid_digits_record_names_its_protocol(digits_run):
    out = digits_run / "fid.json"
    assert main(["eval", "fid-digits", str(digits_run), "--num-per-class", "3", "--steps", "4", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["metric"] == "FID-digits" and np.isfinite(record["value"]) and 0 <= record["class_accuracy"] <= 1
    assert record["n_samples"] == 30 and "digits classifier" in record["feature_extractor"]
    assert record["sampler_options"]["schedule"] == "authors" and record["guidance_schedule"] == "auto"
    before = digits_run / "fid-before.json"  # partgm's earlier sampler numbers
    assert main(["eval", "fid-digits", str(digits_run), "--num-per-class", "1", "--steps", "4", "--sampler", "halton",
                 "--schedule", "partgm", "--temp-warmup", "0", "--guidance-schedule", "constant",
                 "--out", str(before)]) == 0
    assert json.loads(before.read_text())["sampler_options"]["schedule"] == "partgm"
    assert "training split" in record["reference"] and record["resize"].startswith("none")
    assert list((digits_run.parent / "cache").glob("digits-classifier-*.safetensors"))  # cached beside the data


def test_tf_inception_fid_names_the_missing_file(digits_run, tmp_path, capsys):
    assert main(["eval", "fid", str(digits_run), "--inception-weights", str(tmp_path / "inception.pth"),
                 "--ref-stats", str(tmp_path / "ref.npz")]) == 2
    assert "inception.pth not found" in capsys.readouterr().err


def test_vq_train_command(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    assert main(["vq", "train", str(folder), "--out", str(tmp_path / "vq"), "--size", "16", "--steps", "2",
                 "--hidden", "8", "--codebook-size", "16", "--code-dim", "4"]) == 0
    assert (tmp_path / "vq" / "model.safetensors").is_file() and (tmp_path / "vq" / "config.json").is_file()


def test_bench_images_smoke(tmp_path):
    out = tmp_path / "images.json"
    assert main(["bench", "images", "--steps", "2", "--guidance", "0,1", "--batch", "2", "--warmup", "0",
                 "--repeats", "1", "--variants", "maskgit/halton,pgm-image/confidence", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    assert len(records) == 4 and len({r["run_id"] for r in records}) == 1
    assert all(r["images_per_s"] > 0 and r["load_1m"] >= 0 and r["threads"] >= 1 for r in records)
    assert out.with_suffix(".png").is_file()
