"""The opt-in adaptive samplers (``threshold``, ``eb``) for PGM and MDLM: every free position decoded
exactly once, prompts kept, deterministic with a seed, one token per step at the strict end of the knob,
fewer network calls as the knob loosens, never a default, and their flags."""

from __future__ import annotations

import itertools

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.errors import PartgmError
from partgm.models import randomize_
from partgm.resolve import resolve_config
from partgm.samplers import SamplingOptions, generate, get_sampler, make_prompt, sampler_names
from partgm.samplers.adaptive import EntropyBoundSampler, ThresholdSampler
from partgm.samplers.cached import sampler_choice

pytestmark = pytest.mark.usefixtures("one_thread")
V, L = 11, 16
ALGOS = ["pgm", "mdlm"]


def tiny(algo: str):
    cfg = resolve_config(overrides=[f"algo={algo}", "preset=cpu-tiny"])
    algorithm = get_algorithm(algo, vocab_size=V, bos_id=V - 1)
    return algorithm, randomize_(algorithm.build_model(cfg.model), std=0.1, seed=0).eval()


def draw(algo, sampler, steps=L, seed=3, prompt=None):
    algorithm, model = tiny(algo)
    prompt = prompt or make_prompt(3, L, V - 1, [1, 2], {9: 4})
    tokens = generate(algorithm, model, prompt, SamplingOptions(steps=steps), sampler, torch.Generator().manual_seed(seed))
    return prompt, tokens


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("sampler", [ThresholdSampler(0.5), EntropyBoundSampler(2.0), ThresholdSampler(0.05)])
def test_every_free_position_decoded_once_and_prompt_kept(algo, sampler):
    algorithm, model = tiny(algo)
    calls = []
    inner = algorithm.logits

    def spy(model_, context, query):
        calls.append((context.clean.clone(), context.tokens.clone()))
        return inner(model_, context, query)

    algorithm.logits = spy
    prompt = make_prompt(2, L, V - 1, [1, 2], {9: 4})
    tokens = generate(algorithm, model, prompt, SamplingOptions(steps=6), sampler, torch.Generator().manual_seed(1))
    assert torch.equal(tokens[prompt.fixed], prompt.tokens[prompt.fixed])
    assert bool(((tokens >= 0) & (tokens < V)).all())
    assert 1 <= len(calls) <= 6 and len(sampler.last_widths) == len(calls)  # steps caps the calls
    assert torch.equal(calls[0][0], prompt.fixed)
    states = calls + [(torch.ones_like(prompt.fixed), tokens)]
    for (clean, before), (clean_next, after) in itertools.pairwise(states):
        assert bool((clean <= clean_next).all())  # a decoded position stays decoded ...
        assert torch.equal(before[clean], after[clean])  # ... with its token: decoded exactly once
        assert bool(((clean_next.sum(1) > clean.sum(1)) | clean.all(1)).all())  # every unfinished row moves


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("cls,knob", [(ThresholdSampler, 0.6), (EntropyBoundSampler, 1.0)])
def test_deterministic_with_a_seed(algo, cls, knob):
    _, a = draw(algo, cls(knob), seed=4)
    _, b = draw(algo, cls(knob), seed=4)
    _, c = draw(algo, cls(knob), seed=5)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("sampler", [ThresholdSampler(1.0), EntropyBoundSampler(0.0)])
def test_strict_knob_decodes_one_token_per_step(algo, sampler):
    prompt, _ = draw(algo, sampler, steps=L)
    n_free = int((~prompt.fixed[0]).sum())
    assert len(sampler.last_widths) == n_free
    assert [w for _, w in sampler.last_widths] == list(range(n_free, 0, -1))  # one fewer left each call


@pytest.mark.parametrize("algo", ALGOS)
def test_a_looser_knob_needs_fewer_calls(algo):
    loose, strict = ThresholdSampler(0.01), ThresholdSampler(1.0)
    draw(algo, loose)
    draw(algo, strict)
    assert len(loose.last_widths) == 1 < len(strict.last_widths)  # tau 0.01 < 1 / V: all at once
    wide, narrow = EntropyBoundSampler(1e9), EntropyBoundSampler(0.0)
    draw(algo, wide)
    draw(algo, narrow)
    assert len(wide.last_widths) == 1 < len(narrow.last_widths)


def test_opt_in_never_default_and_flag_errors():
    for algo in ALGOS:
        algorithm, _ = tiny(algo)
        names = sampler_names(algorithm)
        assert names[0] in ("uniform", "ancestral") and {"threshold", "eb"} <= set(names)
        assert get_sampler(algorithm, "threshold").name == "threshold"
    assert isinstance(sampler_choice("auto", threshold=0.8), ThresholdSampler)
    assert sampler_choice("eb", entropy_bound=0.3).bound == 0.3
    for bad in ({"name": "uniform", "threshold": 0.8}, {"threshold": 0.8, "entropy_bound": 1.0},
                {"threshold": 0.8, "refresh": 2}, {"name": "threshold", "entropy_bound": 1.0}):
        with pytest.raises(PartgmError):
            sampler_choice(**bad)
    with pytest.raises(PartgmError, match="threshold"):
        ThresholdSampler(0.0)
    with pytest.raises(PartgmError, match="entropy"):
        EntropyBoundSampler(-1.0)


def test_sample_command_takes_the_knobs(tmp_path, capsys):
    from tiny_runs import make_run, word_tokenizer

    from partgm.cli import main

    tok = word_tokenizer(tmp_path / "tok")
    for algo in ALGOS:
        run = tmp_path / algo
        make_run(run, algo, tok, length=12)
        for flags in (["--threshold", "0.5"], ["--sampler", "eb", "--entropy-bound", "0.3"]):
            out = tmp_path / f"{algo}-{flags[-1]}.jsonl"
            assert main(["sample", str(run), *flags, "--num-samples", "2", "--batch", "2", "--out", str(out)]) == 0
            assert '"sampler": "' + ("threshold" if "0.5" in flags else "eb") in out.read_text()
    assert main(["sample", str(tmp_path / "pgm"), "--sampler", "uniform", "--threshold", "0.5"]) == 2
    assert "--threshold is an option of the threshold sampler" in capsys.readouterr().err
