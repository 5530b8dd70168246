"""save_pretrained / from_pretrained round trips, run-directory import, corrupt files, and the Hub
commands against a stand-in ``huggingface_hub`` (no network)."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import tokenizers
import torch

from partgm.algorithms import get_algorithm
from partgm.cli import main
from partgm.data import Tokenizer, load_tokenizer
from partgm.errors import PartgmError
from partgm.resolve import resolve_config
from partgm.run.checkpoint import load_run
from partgm.run.pretrained import (
    from_pretrained,
    import_pretrained,
    load_pretrained,
    push_to_hub,
    save_pretrained,
    write_run_directory,
)

LENGTH = 12


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    words = ["in", "the", "beginning", "god", "created", "heaven", "and", "earth"]
    vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.add_special_tokens(["<|endoftext|>"])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    hf.save(str(path))
    return load_tokenizer(str(path))


def make_run(run_dir: Path, algo: str, tok: Tokenizer, seed: int = 0) -> None:
    """Raw and EMA weights differ, so exporting the wrong one is caught."""
    cfg = resolve_config(
        overrides=[
            f"algo={algo}",
            "preset=cpu-tiny",
            f"data.length={LENGTH}",
            "model.hidden_size=32",
            "model.cond_dim=16",
        ]
    )
    algorithm = get_algorithm(algo, tok.vocab_size, tok.bos_id)
    states = []
    for s in (seed, seed + 100):
        torch.manual_seed(s)
        model = algorithm.build_model(cfg.model)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)
        states.append(model.state_dict())
    write_run_directory(
        run_dir, cfg, tok.vocab_size, tok.bos_id, tok.eos_id, states[0], states[1], tok, step=42
    )


def logits(algo: str, model: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (2, LENGTH), generator=g)
    with torch.no_grad():
        if algo == "pgm":
            return model(x, (torch.rand(2, LENGTH, generator=g) < 0.4).long())
        return model(x)


@pytest.mark.parametrize("algo", ("pgm", "mdlm", "ar"))
def test_round_trip_gives_identical_logits(tmp_path: Path, tok: Tokenizer, algo: str) -> None:
    make_run(tmp_path / "run", algo, tok)
    out = save_pretrained(tmp_path / "run", tmp_path / "pre")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert (config["algo"], config["vocab_size"], config["bos_id"], config["step"], config["weights"]) == (
        algo,
        tok.vocab_size,
        0,
        42,
        "ema",
    )
    algorithm, model, tokenizer = from_pretrained(tmp_path / "pre")
    run = load_run(tmp_path / "run")  # EMA weights
    assert torch.equal(logits(algo, model), logits(algo, run.model))
    assert not model.training and algorithm.name == algo and algorithm.vocab_size == tok.vocab_size
    assert tokenizer.encode("in the beginning") == tok.encode("in the beginning") == [2, 3, 4]
    # the raw weights, from a LoadedRun and from a bare model
    raw = load_run(tmp_path / "run", weights="raw")
    save_pretrained(raw, tmp_path / "pre-raw")
    assert torch.equal(logits(algo, from_pretrained(tmp_path / "pre-raw")[1]), logits(algo, raw.model))
    assert not torch.equal(logits(algo, raw.model), logits(algo, run.model))
    save_pretrained(raw.model, tmp_path / "pre-model", cfg=raw.cfg, algorithm=raw.algorithm)
    p = load_pretrained(tmp_path / "pre-model")
    assert p.tokenizer is None and torch.equal(logits(algo, p.model), logits(algo, raw.model))
    # back into a run directory
    import_pretrained(tmp_path / "pre", tmp_path / "run2")
    again = load_run(tmp_path / "run2")
    assert again.step == 42 and torch.equal(logits(algo, again.model), logits(algo, run.model))
    assert again.tokenizer.encode("god") == [5]


def test_missing_and_corrupt_files(tmp_path: Path, tok: Tokenizer) -> None:
    make_run(tmp_path / "run", "pgm", tok)
    good = save_pretrained(tmp_path / "run", tmp_path / "good")

    def broken(name: str, edit) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        return d

    cases = {
        "no-weights": (lambda d: (d / "model.safetensors").unlink(), "has no model.safetensors"),
        "no-config": (lambda d: (d / "config.json").unlink(), "not a partgm pretrained directory"),
        "no-tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "has no tokenizer.json"),
        "bad-json": (lambda d: (d / "config.json").write_text("{oops"), "unreadable or corrupt"),
        "not-ours": (
            lambda d: (d / "config.json").write_text('{"model_type": "gpt2"}'),
            "not a partgm pretrained config",
        ),
        "truncated": (
            lambda d: (d / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:300]),
            "truncated or corrupt",
        ),
        "bad-tokenizer": (lambda d: (d / "tokenizer.json").write_text("nope"), "cannot load tokenizer"),
        "wrong-shape": (
            lambda d: (d / "config.json").write_text(
                (good / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": 64')
            ),
            "does not match the model config",
        ),
        "bad-option": (
            lambda d: (d / "config.json").write_text(
                (good / "config.json").read_text().replace('"hidden_size": 32', '"hidden_size": "big"')
            ),
            "model.hidden_size: expected an integer",
        ),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(PartgmError, match=message):
            from_pretrained(broken(name, edit))
    with pytest.raises(PartgmError, match="pretrained directory './nowhere' does not exist"):
        from_pretrained("./nowhere")
    with pytest.raises(PartgmError, match="already holds a run"):
        import_pretrained(good, tmp_path / "run")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)


def test_hub_needs_huggingface_hub(tmp_path: Path, tok: Tokenizer, no_hub: None, capsys) -> None:
    make_run(tmp_path / "run", "ar", tok)
    with pytest.raises(PartgmError, match=r"pip install partgm\[hf\]"):
        from_pretrained("someone/some-model")
    with pytest.raises(PartgmError, match=r"pip install partgm\[hf\]"):
        push_to_hub(tmp_path / "run", "someone/some-model")
    assert main(["hub", "pull", "someone/some-model", str(tmp_path / "pulled")]) == 2
    assert "pip install partgm[hf]" in capsys.readouterr().err
    # local directories never need it
    save_pretrained(tmp_path / "run", tmp_path / "pre")
    assert from_pretrained(tmp_path / "pre")[0].name == "ar"


def fake_hub(remote: Path, calls: list) -> types.ModuleType:
    """A stand-in for huggingface_hub that 'uploads' into ``remote/REPO`` and downloads from there."""
    hub = types.ModuleType("huggingface_hub")

    class HfApi:
        def create_repo(self, repo_id: str, private: bool = False, exist_ok: bool = False) -> str:
            calls.append(("create_repo", repo_id, private))
            (remote / repo_id).mkdir(parents=True, exist_ok=exist_ok)
            return repo_id

        def upload_folder(self, folder_path: str, repo_id: str, revision=None, commit_message: str = ""):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)
            return types.SimpleNamespace(commit_url=f"https://hub.example/{repo_id}/commit/1")

    def snapshot_download(repo_id: str, revision=None) -> str:
        calls.append(("snapshot_download", repo_id, revision))
        if not (remote / repo_id).is_dir():
            raise FileNotFoundError(f"404: {repo_id}")
        return str(remote / repo_id)

    hub.HfApi, hub.snapshot_download = HfApi, snapshot_download
    return hub


def test_hub_push_and_pull(tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls: list = []
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(tmp_path / "remote", calls))
    make_run(tmp_path / "run", "pgm", tok)
    assert main(["hub", "push", str(tmp_path / "run"), "me/tiny-pgm", "--private"]) == 0
    assert "hub.example/me/tiny-pgm/commit/1" in capsys.readouterr().out
    assert calls[:2] == [
        ("create_repo", "me/tiny-pgm", True),
        ("upload_folder", "me/tiny-pgm", ["README.md", "config.json", "model.safetensors", "tokenizer.json"]),
    ]
    assert main(["hub", "pull", "me/tiny-pgm", str(tmp_path / "pulled")]) == 0
    pulled, original = load_run(tmp_path / "pulled"), load_run(tmp_path / "run")
    assert torch.equal(logits("pgm", pulled.model), logits("pgm", original.model))
    _, model, _ = from_pretrained("me/tiny-pgm")
    assert torch.equal(logits("pgm", model), logits("pgm", original.model))
    assert main(["hub", "pull", "me/missing", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "could not be fetched from the Hub" in err and "404" in err


def test_hub_export_import_cli(tmp_path: Path, tok: Tokenizer, capsys) -> None:
    make_run(tmp_path / "run", "mdlm", tok)
    assert main(["hub", "export", str(tmp_path / "run"), str(tmp_path / "pre"), "--weights", "raw"]) == 0
    assert json.loads((tmp_path / "pre" / "config.json").read_text())["weights"] == "raw"
    assert main(["hub", "import", str(tmp_path / "pre"), str(tmp_path / "run2")]) == 0
    raw = load_run(tmp_path / "run", weights="raw")
    assert torch.equal(logits("mdlm", load_run(tmp_path / "run2").model), logits("mdlm", raw.model))
