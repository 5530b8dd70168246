"""Extension points: an outside algorithm + sampler, and class-conditional models with guidance."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from partgm.algorithms import ALGORITHMS, TokenSpace, build_algorithm
from partgm.cli import main
from partgm.engine import train
from partgm.resolve import resolve_config
from partgm.run.checkpoint import load_run
from partgm.samplers import SamplingOptions, generate, make_prompt

pytestmark = pytest.mark.usefixtures("one_thread")
PLUGINS = Path(__file__).parents[1] / "fixtures" / "plugins"
TEXT = "and the lord said unto moses in the beginning god created the heaven and the earth " * 40


@pytest.fixture()
def plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PARTGM_PLUGINS", "toy_partgm_plugin")
    yield


def test_outside_algorithm_and_sampler_through_api_and_cli(plugin, tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(TEXT)
    run = tmp_path / "run"
    assert main(["train", "--algo", "toy-l2r", "--preset", "cpu-tiny", "--run-dir", str(run),
                 f"data.corpus={corpus}", "data.tokenizer=bpe-260", "data.length=16",
                 f"data.cache_dir={tmp_path / 'cache'}", "train.steps=3", "train.global_batch=4",
                 "train.eval_every=3", "train.save_every=3", "train.progress=false", "data.val_fraction=0.5"]) == 0
    assert "toy-l2r" in ALGORITHMS
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(run), "--steps", "2", "--num-samples", "2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert main(["eval", "ppl", str(run), "--batch", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ppl"] > 1
    # the public API: load, sample with the plug-in's sampler (its family's default), score
    loaded = load_run(run)
    prompt = make_prompt(2, 16, loaded.algorithm.bos_id, [5])
    ids = generate(loaded.algorithm, loaded.model, prompt, SamplingOptions(steps=4), "one-by-one",
                   torch.Generator().manual_seed(0))
    assert ids.shape == (2, 16) and bool((ids[:, 1] == 5).all())
    with pytest.raises(Exception, match="unknown sampler 'uniform' for toy-l2r"):
        generate(loaded.algorithm, loaded.model, prompt, SamplingOptions(steps=4), "uniform")


@dataclasses.dataclass
class LabelledData:
    """Two classes of 8-token rows: class 0 holds ids 1..4, class 1 ids 5..8 (BOS 0 first)."""

    train: np.ndarray
    val: np.ndarray
    labels: dict
    vocab_size: int = 9
    bos_id: int = 0
    eos_id: int = 0
    length: int = 8
    path: str = "labelled"
    header: dict = dataclasses.field(
        default_factory=lambda: {"vocab_size": 9, "length": 8, "bos_id": 0, "num_classes": 2})

    def tokenizer(self):
        return None


def labelled_data(rows: int = 64) -> LabelledData:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, rows)
    tokens = rng.integers(1, 5, (rows, 8)) + 4 * labels[:, None]
    tokens[:, 0] = 0
    return LabelledData(tokens[:48], tokens[48:], {"train": labels[:48], "val": labels[48:]})


@pytest.mark.parametrize("algo", ["mdlm", "pgm"])
def test_class_conditional_training_and_guidance(algo: str, tmp_path: Path) -> None:
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny", "data.length=8", "train.steps=60",
                                    "train.global_batch=16", "train.lr=3e-3", "train.warmup_steps=5",
                                    "train.ema_decay=0", "train.eval_every=60", "train.save_every=60",
                                    "train.progress=false", "train.device=cpu", "train.label_dropout=0.2"])
    data = labelled_data()
    train(cfg, data, tmp_path / "run")
    run = load_run(tmp_path / "run", weights="raw")
    assert run.algorithm.space.num_classes == 2
    algorithm, model = run.algorithm, run.model
    n = 16
    prompts = {c: make_prompt(n, 8, 0, labels=[c] * n) for c in (0, 1)}
    draws = {}
    for c, prompt in prompts.items():
        plain = generate(algorithm, model, prompt, SamplingOptions(steps=7), generator=torch.Generator().manual_seed(1))
        zero = generate(algorithm, model, prompt, SamplingOptions(steps=7, guidance=0.0, guidance_schedule="linear"),
                        generator=torch.Generator().manual_seed(1))
        assert torch.equal(plain, zero)  # w = 0 is the unguided sampler
        draws[c] = generate(algorithm, model, prompt, SamplingOptions(steps=7, guidance=2.0),
                            generator=torch.Generator().manual_seed(1))
    assert float((draws[0][:, 1:] <= 4).float().mean()) > 0.8  # labels steer the samples
    assert float((draws[1][:, 1:] >= 5).float().mean()) > 0.8


def test_guided_logits_are_the_cfg_combination() -> None:
    from partgm.algorithms.base import Context
    from partgm.models import randomize_
    from partgm.samplers.common import denoiser_logits

    space = TokenSpace(9, 8, bos_id=0, num_classes=3)
    for algo in ("mdlm", "pgm"):
        cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny", "data.length=8"])
        algorithm = build_algorithm(cfg, space)
        model = randomize_(algorithm.build_model(cfg.model), std=0.1).eval()
        tokens = torch.randint(1, 9, (2, 8))
        clean = torch.rand(2, 8) < 0.5
        clean[:, 0] = True
        query = torch.tensor([[3, 4], [5, 6]])
        labels = torch.tensor([0, 2])
        context = Context(tokens, clean, labels)
        with torch.no_grad():
            cond = algorithm.logits(model, context, query)
            uncond = algorithm.logits(model, context.with_labels(algorithm.null_labels(2, "cpu")), query)
            guided = denoiser_logits(algorithm, model, context, query, SamplingOptions(guidance=1.5))
        torch.testing.assert_close(guided, 2.5 * cond - 1.5 * uncond, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(cond, uncond)


def test_plugin_module_missing_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv("PARTGM_PLUGINS", "no_such_partgm_plugin")
    assert main(["presets"]) == 2
    assert "PARTGM_PLUGINS names 'no_such_partgm_plugin'" in capsys.readouterr().err
    sys.modules.pop("no_such_partgm_plugin", None)
