"""Issue 23, item 1: one rule (``partgm.fileio.claim_output``) for every command that writes: nothing it did
not create now is replaced without ``--overwrite``, a run directory never; a default name never replaces an
earlier output. One test per command; each refusal comes before any work, so the tests are cheap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_runs import make_run, word_tokenizer

from partgm.cli import main
from partgm.fileio import claim_output, free_stem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("owrun")
    make_run(root / "run", "pgm", word_tokenizer(root / "tok"))
    return root / "run"


def refused(argv: list[str], capsys, *kept: Path) -> None:
    """``argv`` exits 2 with the --overwrite advice (or the run-directory rule), and ``kept`` are unchanged."""
    before = {p: p.read_bytes() for p in kept}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite" in err or "already holds a run" in err, err
    assert {p: p.read_bytes() for p in kept} == before


def mine(path: Path, text: str = "not yours") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_claim_output_and_free_stem(tmp_path, text_run) -> None:
    assert claim_output(tmp_path / "new", False) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    claim_output(tmp_path / "empty", False)  # an empty directory holds nothing to lose
    from partgm.errors import PartgmError

    with pytest.raises(PartgmError, match="pass --overwrite"):
        claim_output(mine(tmp_path / "f"), False)
    claim_output(tmp_path / "f", True)
    with pytest.raises(PartgmError, match="already holds a run"):
        claim_output(text_run, True)  # never, even with --overwrite
    mine(tmp_path / "s.png")
    assert free_stem(tmp_path / "s", (".png", ".jsonl")) == tmp_path / "s-2"


def vq_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_vq_train(tmp_path, text_run, capsys) -> None:
    folder = vq_folder(tmp_path)
    args = ["vq", "train", str(folder), "--size", "8", "--steps", "1", "--hidden", "4", "--codebook-size", "4",
            "--code-dim", "2"]
    vq = tmp_path / "vq"
    assert main([*args, "--out", str(vq)]) == 0
    refused([*args, "--out", str(vq)], capsys, vq / "config.json", vq / "model.safetensors")
    refused([*args, "--out", str(text_run), "--overwrite"], capsys, text_run / "config.json")
    assert main([*args, "--out", str(vq), "--overwrite", "--seed", "1"]) == 0


def test_hub_export_import(tmp_path, text_run, capsys) -> None:
    make_run(tmp_path / "other", "pgm", word_tokenizer(tmp_path / "tok"))
    refused(["hub", "export", str(text_run), str(tmp_path / "other"), "--overwrite"], capsys,
            tmp_path / "other" / "config.json")
    pre = tmp_path / "pre"
    assert main(["hub", "export", str(text_run), str(pre)]) == 0
    refused(["hub", "export", str(text_run), str(pre)], capsys, pre / "config.json")
    assert main(["hub", "export", str(text_run), str(pre), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    stranger = mine(tmp_path / "dest" / "notes.txt")
    refused(["hub", "import", str(pre), str(stranger.parent)], capsys, stranger)
    assert main(["hub", "import", str(pre), str(stranger.parent), "--overwrite"]) == 0
    assert not stranger.exists() and (stranger.parent / "config.json").is_file()
    refused(["hub", "import", str(pre), str(text_run), "--overwrite"], capsys, text_run / "config.json")


def test_hub_pull_refuses_before_any_download(tmp_path, capsys) -> None:
    stranger = mine(tmp_path / "dest" / "notes.txt")
    refused(["hub", "pull", "someone/model", str(stranger.parent)], capsys, stranger)


def test_convert(tmp_path, capsys) -> None:
    stranger = mine(tmp_path / "dest" / "notes.txt")
    refused(["convert", str(tmp_path / "x.ckpt"), str(stranger.parent), "--algo", "pgm"], capsys, stranger)


def test_text_sample(tmp_path, text_run, capsys) -> None:
    args = ["sample", str(text_run), "--steps", "2", "--num-samples", "1", "--batch", "1"]
    out = mine(tmp_path / "s.jsonl")
    refused([*args, "--out", str(out)], capsys, out)
    assert main(args) == 0 and main(args) == 0  # defaults: the second takes the next free name
    assert sorted(p.name for p in (text_run / "samples").iterdir()) == [
        "samples-steps2-seed0-2.jsonl", "samples-steps2-seed0.jsonl"]


@pytest.mark.parametrize("command", [
    ["eval", "genppl", "RUN", "--judge", "RUN"],
    ["eval", "lambada", "RUN", "--data", "x.jsonl"],
    ["eval", "fid-digits", "RUN"],
    ["eval", "oracle", "RUN"],
])
def test_eval_out(command, tmp_path, text_run, capsys) -> None:
    out = mine(tmp_path / "e.json")
    refused([c.replace("RUN", str(text_run)) for c in command] + ["--out", str(out)], capsys, out)


@pytest.mark.parametrize("command", [
    ["bench", "images"],
    ["bench", "frontier", "--pgm", "RUN"],
    ["bench", "sample", "--smoke"],
    ["bench", "train", "--smoke"],
    ["bench", "quality"],
])
def test_bench_out(command, tmp_path, text_run, capsys) -> None:
    out = mine(tmp_path / "b.json", json.dumps({"a": 1}))
    refused([c.replace("RUN", str(text_run)) for c in command] + ["--out", str(out)], capsys, out)
    png = mine(tmp_path / "c.png")  # the PNG beside a new --out is not replaced either
    refused([c.replace("RUN", str(text_run)) for c in command] + ["--out", str(tmp_path / "c.json")], capsys, png)
