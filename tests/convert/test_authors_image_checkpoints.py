"""The authors' image checkpoints convert into runs whose logits equal theirs (fixtures made by running
their model code: tests/fixtures/authors_images/README.md), and the converted runs sample images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from partgm.cli import main
from partgm.convert import convert_checkpoint
from partgm.errors import PartgmError
from partgm.run.checkpoint import load_run

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "authors_images"
K, CLASSES = 12, 3


def _io(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)


def _labels(io: dict) -> torch.Tensor:
    return torch.where(io["drop_label"], CLASSES, io["labels"])  # a dropped label is the null class


@pytest.mark.parametrize("name", ["pgm_2_2", "pgm_3_1"])
def test_pgm_training_logits_equal_the_authors(tmp_path, name):
    summary = convert_checkpoint(FIXTURES / f"{name}.pth", tmp_path / "run", "pgm-image", length=16)
    enc, dec = map(int, name.split("_")[1:])
    assert (summary["model"]["n_encoder_blocks"], summary["model"]["n_decoder_blocks"]) == (enc, dec)
    assert summary["vocab_size"] == K and summary["num_classes"] == CLASSES and summary["step"] == 7
    run = load_run(tmp_path / "run")
    io = _io(name)
    with torch.no_grad():
        ours = run.model(io["codes"], io["groups"], labels=_labels(io))
    assert (ours - io["logits"][..., :K]).abs().max() < 1e-5
    # our packed sampling path equals our training path on the converted model (group 0 -> clean)
    clean = io["groups"] == 0
    with torch.no_grad():
        for b in range(len(clean)):
            positions = clean[b].nonzero()[:, 0][None]
            query = (~clean[b]).nonzero()[:, 0][None]
            if query.numel() == 0:
                continue
            packed = run.model.forward_packed(io["codes"][b : b + 1].gather(1, positions), positions, query,
                                              labels=_labels(io)[b : b + 1])
            assert (packed - ours[b : b + 1, query[0]]).abs().max() < 1e-5


def test_maskgit_logits_equal_the_authors(tmp_path):
    summary = convert_checkpoint(FIXTURES / "maskgit.pth", tmp_path / "run", "maskgit", n_heads=2)
    assert summary["model"]["network"] == "reference" and summary["model"]["registers"] == 1
    run = load_run(tmp_path / "run")
    io = _io("maskgit")
    with torch.no_grad():
        ours = run.model(io["tokens"], labels=_labels(io))
    assert (ours - io["logits"]).abs().max() < 1e-5


def test_converted_runs_sample_images_from_the_cli(tmp_path, capsys):
    from partgm.images.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig

    vq = tmp_path / "vq.pt"  # a random tiny LlamaGen VQ with the checkpoint's 12 codes (VQ-8: 4x4 codes -> 32 px)
    cfg = LlamaGenVQConfig(codebook_size=K, codebook_embed_dim=8, ch=32, ch_mult=(1, 2, 2, 4), z_channels=16)
    torch.save({"model": LlamaGenVQ(cfg).state_dict()}, vq)
    for algo, ckpt in (("pgm-image", "pgm_3_1"), ("maskgit", "maskgit")):
        run = tmp_path / algo
        assert main(["convert", str(FIXTURES / f"{ckpt}.pth"), str(run), "--algo", algo, "--length", "16",
                     "--n-heads", "2", "--tokenizer", f"llamagen:{vq}"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["grid"] == [4, 4]
        out = run / "grid"
        assert main(["sample", str(run), "--steps", "4", "--num-samples", "2", "--class", "1", "--guidance", "1",
                     "--out", str(out)]) == 0
        assert out.with_suffix(".png").is_file()


def test_image_checkpoint_errors(tmp_path):
    with pytest.raises(PartgmError, match="use --algo pgm-image or maskgit"):
        convert_checkpoint(FIXTURES / "maskgit.pth", tmp_path / "a", "pgm", allow_pickle=True)
    with pytest.raises(PartgmError, match="unknown pgm-image image keys|has no 'vocab_embed.embedding'"):
        convert_checkpoint(FIXTURES / "maskgit.pth", tmp_path / "b", "pgm-image")
    with pytest.raises(PartgmError, match="not a square"):
        convert_checkpoint(FIXTURES / "pgm_2_2.pth", tmp_path / "c", "pgm-image", length=15)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(PartgmError, match="cannot read"):
        convert_checkpoint(tmp_path / "junk.pth", tmp_path / "d", "maskgit")
