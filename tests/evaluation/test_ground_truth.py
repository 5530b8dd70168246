"""Ground truth: the HMM process against brute force, its corpora, and every sampler on the exact denoiser
(at one token per step the samples must be draws of the process; decoding at once must be caught)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from partgm.algorithms.oracle import oracle_denoiser, oracle_space
from partgm.cli import main
from partgm.data import prepare_dataset
from partgm.data.hmm import HMMProcess
from partgm.data.synthetic import process_of
from partgm.errors import PartgmError
from partgm.evaluation.oracle import excess_nelbo, fresh_draws, ngram_rows, sample_quality, true_nll
from partgm.samplers import SamplingOptions, generate, make_prompt
from partgm.samplers.image_schedules import ImageSampling
from partgm.samplers.images import image_sampler

pytestmark = pytest.mark.usefixtures("one_thread")

LENGTH = 9  # BOS + 8 HMM tokens


@pytest.fixture(scope="module")
def tiny() -> HMMProcess:
    return HMMProcess.random(3, 4, 0.5, seed=1, classes=2)


@pytest.fixture(scope="module")
def process() -> HMMProcess:
    """Peaked enough that decoding several tokens at once costs a clear excess NLL."""
    return HMMProcess.random(8, 12, 0.1, seed=0, emission_concentration=0.1)


def _brute_joint(p: HMMProcess, n: int, label: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(every sequence [V^n, n], its probability [V^n]) by summing over every hidden path and class."""
    seqs = torch.tensor(list(itertools.product(range(p.vocab), repeat=n)))
    classes = range(p.num_classes) if label is None else [label]
    probs = torch.zeros(len(seqs), dtype=torch.float64)
    for c in classes:
        weight = p.class_prior[c] if label is None else 1.0
        for path in itertools.product(range(p.initial.shape[1]), repeat=n):
            term = weight * p.initial[c, path[0]] * p.emission[c, path[0], seqs[:, 0]]
            for i in range(1, n):
                term = term * p.transition[c, path[i - 1], path[i]] * p.emission[c, path[i], seqs[:, i]]
            probs += term
    return seqs, probs


@pytest.mark.parametrize("label", [None, 0, 1])
def test_forward_algorithm_matches_brute_force(tiny, label):
    seqs, probs = _brute_joint(tiny, 4, label)
    labels = None if label is None else torch.full((len(seqs),), label)
    assert torch.allclose(tiny.log_prob(seqs, labels).exp(), probs, atol=1e-14)
    assert abs(float(probs.sum()) - 1.0) < 1e-12
    bad = seqs[:2].clone()
    bad[:, 1] = tiny.vocab  # outside the vocabulary: impossible
    assert torch.isinf(tiny.log_prob(bad, None)).all()


@pytest.mark.parametrize("label", [None, 1, 2])  # 2 = the null class: the prior mixture, as None
def test_posterior_marginals_match_brute_force(tiny, label):
    seqs, probs = _brute_joint(tiny, 4, None if label == 2 else label)
    gen = torch.Generator().manual_seed(0)
    x = seqs[torch.randint(len(seqs), (6,), generator=gen)]
    visible = torch.rand(6, 4, generator=gen) < 0.5
    labels = None if label is None else torch.full((6,), label)
    got = tiny.log_marginals(x, visible, labels).exp()
    for b in range(6):
        for pos in range(4):
            others = visible[b].clone()
            others[pos] = False
            keep = (seqs[:, others] == x[b, others]).all(dim=1)
            brute = torch.zeros(tiny.vocab, dtype=torch.float64).index_add_(0, seqs[:, pos], probs * keep)
            assert torch.allclose(got[b, pos], brute / brute.sum(), atol=1e-12)
    positions = torch.tensor([[3, 0], [1, 1], [2, 3], [0, 0], [3, 2], [1, 0]])  # only these: the same numbers
    full = tiny.log_marginals(x, visible, labels).gather(1, positions[..., None].expand(-1, -1, tiny.vocab))
    assert torch.allclose(tiny.log_marginals(x, visible, labels, positions), full, rtol=0, atol=1e-12)


def test_exact_ngram_marginals_match_brute_force(tiny):
    seqs, probs = _brute_joint(tiny, 4, None)
    uni = sum(torch.zeros(tiny.vocab, dtype=torch.float64).index_add_(0, seqs[:, i], probs) for i in range(4)) / 4
    bi = torch.zeros(tiny.vocab, tiny.vocab, dtype=torch.float64)
    for i in range(3):
        bi.index_put_((seqs[:, i], seqs[:, i + 1]), probs, accumulate=True)
    assert torch.allclose(tiny.unigram(4), uni, atol=1e-14)
    assert torch.allclose(tiny.bigram(4), bi / 3, atol=1e-14)


def test_process_is_deterministic_and_round_trips(tmp_path):
    a, b = HMMProcess.random(6, 10, 0.2, seed=3), HMMProcess.random(6, 10, 0.2, seed=3)
    assert torch.equal(a.transition, b.transition) and torch.equal(a.emission, b.emission)
    assert not torch.equal(a.transition, HMMProcess.random(6, 10, 0.2, seed=4).transition)
    loaded = HMMProcess.load(a.save(tmp_path / "p.npz"))
    for key in ("initial", "transition", "emission", "class_prior"):
        assert torch.equal(getattr(loaded, key), getattr(a, key))
    assert loaded.params == a.params
    with np.load(tmp_path / "p.npz") as z:  # a plain file anyone can read
        assert z["transition"].shape == (1, 6, 6) and np.allclose(z["transition"].sum(-1), 1.0)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(PartgmError, match="not an HMM process file"):
        HMMProcess.load(tmp_path / "bad.npz")


def test_synthetic_corpora(tmp_path):
    spec = "hmm:states=8,vocab=12,docs=60,seed=2"
    data = prepare_dataset(spec, "gpt2", 16, 0.1, tmp_path)
    again = prepare_dataset(spec, "gpt2", 16, 0.1, tmp_path / "other")
    assert np.array_equal(np.asarray(data.train), np.asarray(again.train))
    assert data.vocab_size == 13 and data.bos_id == 12 and data.train.shape == (54, 16)
    assert (np.asarray(data.train)[:, 0] == 12).all() and (np.asarray(data.train)[:, 1:] < 12).all()
    assert torch.equal(HMMProcess.load(data.path / "process.npz").emission, process_of(spec).emission)
    assert data.header["true_nll_per_token"]["positions"] == 15
    assert data.tokenizer().decode([12, 3, 5]) == "<|endoftext|> t3 t5"
    image = prepare_dataset("hmm-image:classes=3,states=4,vocab=8,docs=30", "gpt2", 16, 0.2, tmp_path)
    assert image.header["grid"] == [4, 4] and image.bos_id is None and image.header["num_classes"] == 3
    assert set(np.asarray(image.labels["train"]).tolist()) <= {0, 1, 2}
    with pytest.raises(PartgmError, match="must be a square"):
        prepare_dataset("hmm-image:docs=30", "gpt2", 12, 0.2, tmp_path)
    with pytest.raises(PartgmError, match="states=2x"):
        prepare_dataset("hmm:states=2x", "gpt2", 12, 0.2, tmp_path)
    with pytest.raises(PartgmError, match="must be one of"):
        prepare_dataset("hmm:size=3", "gpt2", 12, 0.2, tmp_path)


def _samples(process, family: str, sampler: str, steps: int, n: int = 400, seed: int = 2):
    algorithm, model = oracle_denoiser(process, oracle_space(process, LENGTH), family)
    prompt = make_prompt(n, LENGTH, algorithm.bos_id)
    out = generate(algorithm, model, prompt, SamplingOptions(steps=steps), sampler, torch.Generator().manual_seed(seed))
    return algorithm, out


def _matches_process(process, algorithm, out: torch.Tensor) -> dict[str, bool]:
    """Each statistic of the samples against true draws: mean NLL within 3 standard errors of the
    difference, unigram / bigram TV to the exact marginals below what 99% of true draw sets reach."""
    space = algorithm.space
    n = len(out)
    gen = torch.Generator().manual_seed(99)
    ref = true_nll(process, space, fresh_draws(process, space, 4000, gen)) / (LENGTH - 1)
    nll = -process.log_prob(out[:, 1:]) / (LENGTH - 1)
    se = (nll.var() / n + ref.var() / len(ref)).sqrt()
    checks = {"nll": bool((nll.mean() - ref.mean()).abs() < 3 * se)}
    for order, exact in ((1, process.unigram(LENGTH - 1)), (2, process.bigram(LENGTH - 1).reshape(-1))):
        def tv(tokens, order=order, exact=exact):
            counts = np.bincount(np.concatenate(ngram_rows(tokens, process.vocab, order)), minlength=len(exact))
            return 0.5 * np.abs(counts / counts.sum() - exact.numpy()).sum()

        floor = [tv(fresh_draws(process, space, n, gen).tokens[:, 1:]) for _ in range(40)]
        checks[f"{order}-gram"] = bool(tv(out[:, 1:]) < np.quantile(floor, 0.99) * 1.1)
    return checks


@pytest.mark.parametrize(("family", "sampler", "steps"), [
    ("partition", "uniform", LENGTH - 1), ("partition", "naive", LENGTH - 1),
    ("partition", "binomial", 400), ("masked", "fast-ancestral", 400), ("masked", "ancestral", 400),
    ("maskgit", "fast-ancestral", 400), ("pgm-image", "uniform", LENGTH - 1),
])
def test_one_token_per_step_samples_the_process(process, family, sampler, steps):
    algorithm, out = _samples(process, family, sampler, steps)
    assert out[:, 0].eq(algorithm.bos_id).all() and (out[:, 1:] < process.vocab).all()
    assert _matches_process(process, algorithm, out) == {"nll": True, "1-gram": True, "2-gram": True}


@pytest.mark.parametrize(("family", "sampler"), [("partition", "uniform"), ("masked", "fast-ancestral")])
def test_decoding_all_at_once_is_caught(process, family, sampler):
    """One step draws every token from its marginal independently: the unigrams stay right, the NLL and
    the bigrams do not."""
    algorithm, out = _samples(process, family, sampler, 1)
    assert _matches_process(process, algorithm, out) == {"nll": False, "1-gram": True, "2-gram": False}
    record = sample_quality(algorithm, oracle_denoiser(process, algorithm.space)[1], process, sampler, 1, 200, 100)
    assert record["excess_nll"]["mean"] > 3 * record["excess_nll"]["ci95"]
    assert record["bigram_tv_excess"]["mean"] > record["bigram_tv_excess"]["ci95"]


@pytest.mark.parametrize("sampler", ["confidence", "halton"])
def test_confidence_and_halton_are_not_exact_at_one_token_per_step(process, sampler):
    """What the oracle reveals: even at one token per step neither is exact. MaskGIT's confidence order
    favours likely tokens (samples score below true draws); the authors' Halton sampler draws its first
    step from ``softmax(logits * 0.5)``, flatter than the model (samples score above true draws)."""
    algorithm, out = _samples(process, "maskgit", sampler, LENGTH - 1)
    assert not _matches_process(process, algorithm, out)["nll"]
    ref = true_nll(process, algorithm.space, fresh_draws(process, algorithm.space, 2000, torch.Generator()))
    nll = (-process.log_prob(out[:, 1:])).mean()
    assert nll < ref.mean() if sampler == "confidence" else nll > ref.mean()


def test_class_conditional_oracle_and_guidance():
    p = HMMProcess.random(4, 6, 0.2, seed=5, classes=3, emission_concentration=0.2)
    algorithm, model = oracle_denoiser(p, oracle_space(p, 9), "pgm-image")
    labels = torch.arange(3).repeat(100)
    prompt = make_prompt(300, 9, None, labels=labels)
    out = generate(algorithm, model, prompt, SamplingOptions(steps=9), "uniform", torch.Generator().manual_seed(0))
    nll = -p.log_prob(out, labels)
    ref = -p.log_prob(p.sample(3000, 9, torch.Generator().manual_seed(1), labels.repeat(10))[0], labels.repeat(10))
    assert (nll.mean() - ref.mean()).abs() < 3 * (nll.var() / 300 + ref.var() / 3000).sqrt()
    # constant guidance and no flatter first step (the authors' Halton defaults ramp w from 0 and draw step 0
    # from softmax(logits * 0.5)): the pure effect of guidance
    halton = image_sampler(algorithm, "halton", ImageSampling(temp_warmup=0))
    guided = generate(algorithm, model, prompt, SamplingOptions(steps=9, guidance=2.0, guidance_schedule="constant"),
                      halton, torch.Generator().manual_seed(0))
    assert (-p.log_prob(guided, labels)).mean() < nll.mean()  # guidance sharpens towards the class


def test_exact_denoiser_nelbo_is_tight(process):
    algorithm, model = oracle_denoiser(process, oracle_space(process, LENGTH))
    result = excess_nelbo(algorithm, model, process, num=256, batch=128)
    assert result["mean"] == 0.0  # paired with itself
    plain = result["plain"]
    assert abs(plain["mean"]) < 3 * plain["ci95"] / 1.96 and plain["ci95"] < 0.2


def test_eval_oracle_cli(tmp_path, capsys):
    HMMProcess.random(8, 12, 0.1, seed=0).save(tmp_path / "p.npz")
    out = tmp_path / "o.json"
    assert main(["eval", "oracle", str(tmp_path / "p.npz"), "--length", "9", "--samplers", "uniform",
                 "--steps", "1,8", "--num-samples", "64", "--nelbo-draws", "32", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["steps"] for r in result["samples"]] == [1, 8] and "excess NELBO" in capsys.readouterr().out
    assert main(["eval", "oracle", str(tmp_path / "missing.npz")]) == 2


def test_bench_quality_tiny(tmp_path):
    out = tmp_path / "q.json"
    argv = ["bench", "quality", "--corpus", "hmm:states=4,vocab=6,docs=200", "--length", "9", "--budget", "3",
            "--batch", "4", "--seeds", "2", "--steps", "2", "--num-samples", "8", "--nelbo-draws", "8",
            "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    points = {(p["algo"], p["variant"], p["steps"]) for p in result["summary"]}
    assert ("oracle", "uniform (partition)", 2) in points and ("ar", "kv-cache", 8) in points
    assert ("pgm", "cached r=never", 2) in points and ("mdlm", "fast-ancestral", 2) in points
    assert all(p["seeds"] == 2 for p in result["summary"]) and out.with_suffix(".png").is_file()
    flops = {r["algo"]: r["train_flops"] for r in result["records"] if r["algo"] != "oracle"}
    assert max(flops.values()) / min(flops.values()) < 1.5  # equal training FLOPs, to a step
    assert main(argv) == 0  # the runs are reused
    record = json.loads(out.read_text())
    out.with_suffix(".png").unlink()
    assert main(["bench", "quality", "--report", "--out", str(out)]) == 0  # rebuilt from the records alone
    rebuilt = json.loads(out.read_text())
    assert rebuilt["records"] == record["records"] and rebuilt["summary"] == record["summary"]
    assert [t["candidates"] for t in rebuilt["targets"]] == ["pgm", "mdlm", "pgm"] and out.with_suffix(".png").is_file()
    from partgm.evaluation.oracle import evaluate_oracle

    run = tmp_path / "q-work" / "runs" / "pgm-seed0"
    result = evaluate_oracle(run, ["uniform", "cached"], [8], num_samples=8, batch=8, nelbo_draws=8, ceiling=True)
    uniform, cached = result["samples"]
    assert uniform["ceiling"]["steps"] == 8 and cached["ceiling"] is None  # the cache cannot drive the oracle
    assert result["nelbo"]["times_per_draw"] == 4 and result["target"]["algo"] == "pgm"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_exact_denoiser_on_cuda(process):
    algorithm, model = oracle_denoiser(process, oracle_space(process, LENGTH))
    tokens = fresh_draws(process, algorithm.space, 16, torch.Generator().manual_seed(0)).tokens
    clean = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    on_cpu = model.log_marginals(tokens, clean, None)
    on_gpu = oracle_denoiser(process, algorithm.space)[1].log_marginals(tokens.cuda(), clean.cuda(), None)
    assert on_gpu.device.type == "cuda" and torch.allclose(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-9)
    out = generate(algorithm, model, make_prompt(8, LENGTH, algorithm.bos_id, device="cuda"),
                   SamplingOptions(steps=LENGTH - 1), "uniform", torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and (out[:, 1:] < process.vocab).all()
