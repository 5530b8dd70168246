"""``partgm eval oracle``: exact quality numbers for models of a known process (``partgm.data.hmm``).

(a) ``excess_nelbo``: the model's NELBO (exact NLL for AR) on fresh draws of the process minus their true
NLL, in nats per HMM token, with a 95% interval over draws: 0 is the best any model can do (the exact
denoiser scores 0 up to noise, since MDLM's bound is tight for exact conditionals).
(b) ``sample_quality``: samples of a sampler at a step count: their true NLL per token minus that of as
many fresh true draws (with the same labels), and the unigram / bigram total variation to the process's
exact marginals beside the same distance of the true draws (the finite-sample floor); a sample set that
collapses on likely strings scores *below* the true draws on NLL and above the floor on n-grams.

Shapes: B batch, L row length, n = L - offset HMM positions (offset 1 after a BOS), V the HMM's ids.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partgm.algorithms.base import Batch, TokenSpace
from partgm.data.hmm import HMMProcess
from partgm.errors import PartgmError
from partgm.samplers import SamplingOptions, generate, make_prompt
from partgm.schedules import antithetic_times

Z95 = 1.96
_BOOTSTRAP = 200


def mean_ci(values: np.ndarray) -> dict:
    """{"mean", "ci95"}: the mean and the half-width of its normal 95% interval (nan without values)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"mean": float("nan"), "ci95": float("nan")}
    half = Z95 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "ci95": float(half)}


def offset_of(space: TokenSpace) -> int:
    return 0 if space.bos_id is None else 1


def fresh_draws(process: HMMProcess, space: TokenSpace, n: int, generator: torch.Generator,
                labels: torch.Tensor | None = None) -> Batch:
    """n exact draws in the data's layout (BOS first for text); labels for class-conditional data."""
    o = offset_of(space)
    tokens, drawn = process.sample(n, space.length - o, generator, labels)
    if o:
        tokens = torch.cat([torch.full((n, 1), space.bos_id, dtype=torch.long), tokens], dim=1)
    return Batch(tokens, drawn if space.num_classes else None)


def true_nll(process: HMMProcess, space: TokenSpace, batch: Batch) -> torch.Tensor:
    """-log p [B] float64 of the HMM positions of rows [B, L] (given their labels); inf for invalid ids."""
    return -process.log_prob(batch.tokens[:, offset_of(space):].cpu(), batch.labels)


def excess_nelbo(algorithm, model, process: HMMProcess, num: int = 256, batch: int = 64, seed: int = 0,
                 device: str | torch.device = "cpu", times: int = 4) -> dict:
    """The model's bound minus the true NLL on ``num`` fresh draws, per HMM token, averaged over ``times``
    (time, mask) draws per sequence (AR: exact NLL). ``mean`` / ``ci95`` is the paired estimate: minus the
    exact denoiser's bound *at the same times and masks*, whose expectation is the true NLL (MDLM's bound
    is tight for exact conditionals), so the masking noise cancels; ``plain`` subtracts the true NLL."""
    from partgm.algorithms.oracle import oracle_denoiser

    space = algorithm.space
    n_hmm = space.length - offset_of(space)
    oracle, oracle_model = oracle_denoiser(process, space, schedule=algorithm.schedule)
    generator = torch.Generator().manual_seed(10_007 + seed)
    noise = torch.Generator(device=device).manual_seed(seed)
    bound, paired, truth = [], [], []
    with torch.no_grad():
        for start in range(0, num, batch):
            rows = fresh_draws(process, space, min(batch, num - start), generator)
            on_device, b_sum, o_sum = rows.to(device), 0.0, 0.0
            for _ in range(1 if algorithm.exact_likelihood else times):
                t = antithetic_times(len(rows), noise, device)
                uniforms = torch.rand(rows.tokens.shape, generator=noise, device=device)
                b_sum = b_sum + algorithm.validation_terms(model, on_device, t, uniforms)[0].double().cpu()
                if not algorithm.exact_likelihood:
                    o_sum = o_sum + oracle.validation_terms(oracle_model, rows, t.cpu(), uniforms.cpu())[0]
            truth.append(true_nll(process, space, rows))
            draws = 1 if algorithm.exact_likelihood else times
            bound.append(b_sum / draws)
            paired.append(bound[-1] - (truth[-1] if algorithm.exact_likelihood else o_sum / draws))
    bound_t, paired_t, truth_t = torch.cat(bound), torch.cat(paired), torch.cat(truth)
    return {**mean_ci((paired_t / n_hmm).numpy()), "plain": mean_ci(((bound_t - truth_t) / n_hmm).numpy()),
            "draws": num, "times_per_draw": 1 if algorithm.exact_likelihood else times,
            "model_nelbo_per_token": mean_ci((bound_t / n_hmm).numpy()),
            "true_nll_per_token": mean_ci((truth_t / n_hmm).numpy())}


def draw_samples(algorithm, model, sampler: Any, options: SamplingOptions, num: int, batch: int, seed: int,
                 labels: torch.Tensor | None, device: str | torch.device = "cpu") -> tuple[Batch, float]:
    """(``num`` samples as a Batch on the CPU, seconds spent sampling)."""
    space = algorithm.space
    generator = torch.Generator(device=device).manual_seed(seed)
    rows, seconds = [], 0.0
    for start in range(0, num, batch):
        n = min(batch, num - start)
        prompt = make_prompt(n, space.length, space.bos_id, device=device,
                             labels=None if labels is None else labels[start:start + n])
        begin = time.perf_counter()
        rows.append(generate(algorithm, model, prompt, options, sampler, generator).cpu())
        seconds += time.perf_counter() - begin
    return Batch(torch.cat(rows), labels), seconds


def ngram_rows(tokens: torch.Tensor, vocab: int, order: int) -> list[np.ndarray]:
    """Per row of HMM tokens [B, n]: the flat ids of its n-grams (order 1 or 2); ids >= V are dropped."""
    if order == 1:
        grams, ok = tokens, tokens < vocab
    else:
        grams, ok = tokens[:, :-1] * vocab + tokens[:, 1:], (tokens[:, :-1] < vocab) & (tokens[:, 1:] < vocab)
    return [g[k].numpy() for g, k in zip(grams, ok)]


def tv_distance(rows: list[np.ndarray], exact: np.ndarray, seed: int) -> dict:
    """Total variation between the n-gram frequencies of ``rows`` and ``exact`` (flat), with a bootstrap
    95% interval over rows: {"value", "ci95"} (ci95: half the 2.5-97.5% range)."""
    def tv(index: np.ndarray) -> float:
        counts = np.bincount(np.concatenate([rows[i] for i in index]), minlength=len(exact))
        return 0.5 * float(np.abs(counts / max(counts.sum(), 1) - exact).sum())

    rng = np.random.default_rng(seed)
    boot = [tv(rng.integers(0, len(rows), len(rows))) for _ in range(_BOOTSTRAP)]
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"value": tv(np.arange(len(rows))), "ci95": float(high - low) / 2}


def sample_quality(algorithm, model, process: HMMProcess, sampler: Any, steps: int, num: int = 256,
                   batch: int = 64, seed: int = 0, guidance: float = 0.0,
                   device: str | torch.device = "cpu") -> dict:
    """One point of (b): see the module docstring. Labels (class-conditional data) are drawn from the
    class prior; the reference draws use the same labels."""
    space = algorithm.space
    o, n_hmm = offset_of(space), space.length - offset_of(space)
    generator = torch.Generator().manual_seed(20_011 + seed)
    labels = None
    if space.num_classes:
        labels = torch.multinomial(process.class_prior, num, replacement=True, generator=generator)
    reference = fresh_draws(process, space, num, generator, labels)
    samples, seconds = draw_samples(algorithm, model, sampler, SamplingOptions(steps=steps, guidance=guidance),
                                    num, batch, seed, labels, device)
    nll_s, nll_r = true_nll(process, space, samples) / n_hmm, true_nll(process, space, reference) / n_hmm
    valid = torch.isfinite(nll_s)
    s_stats, r_stats = mean_ci(nll_s[valid].numpy()), mean_ci(nll_r.numpy())
    record = {
        "steps": steps, "num_samples": num, "invalid_samples": int((~valid).sum()),
        "sample_nll_per_token": s_stats, "true_nll_per_token": r_stats,
        "excess_nll": {"mean": s_stats["mean"] - r_stats["mean"],
                       "ci95": math.hypot(s_stats["ci95"], r_stats["ci95"])},
        "seconds": seconds, "tokens_per_s": num * space.length / seconds,
    }
    exact = {1: process.unigram(n_hmm).numpy(), 2: process.bigram(n_hmm).numpy().reshape(-1)}
    for order, name in ((1, "unigram"), (2, "bigram")):
        s_tv = tv_distance(ngram_rows(samples.tokens[:, o:], process.vocab, order), exact[order], seed)
        r_tv = tv_distance(ngram_rows(reference.tokens[:, o:], process.vocab, order), exact[order], seed)
        record[f"{name}_tv"] = s_tv
        record[f"{name}_tv_true_draws"] = r_tv
        record[f"{name}_tv_excess"] = {"mean": s_tv["value"] - r_tv["value"],
                                       "ci95": math.hypot(s_tv["ci95"], r_tv["ci95"])}
    return record


def load_target(target: str | Path, family: str = "partition", length: int = 64, weights: str = "ema",
                device: str = "cpu"):
    """(algorithm, model, process, description) of a run directory trained on a synthetic corpus, or of
    the exact denoiser of an ``.npz`` process file (laid out by ``oracle_space`` at ``length``)."""
    from partgm.algorithms.oracle import oracle_denoiser, oracle_space

    path = Path(target)
    if path.suffix == ".npz":
        if not path.is_file():
            raise PartgmError(f"process file '{path}' not found")
        process = HMMProcess.load(path)
        algorithm, model = oracle_denoiser(process, oracle_space(process, length), family)
        return algorithm, model, process, {"kind": "oracle", "process_file": str(path), "family": family}
    from partgm.run.checkpoint import load_run

    run = load_run(path, weights=weights, device=device)
    return run.algorithm, run.model, process_of_run(run.data_header), {
        "kind": "run", "run_dir": str(path), "algo": run.algorithm.name, "step": run.step, "weights": weights}


def process_of_run(header: dict) -> HMMProcess:
    """The process behind a run's data: its ``process.npz``, or regenerated from the corpus spec."""
    from partgm.data.synthetic import PROCESS_FILE, is_synthetic, process_of

    corpus = str(header.get("corpus", ""))
    if not is_synthetic(corpus):
        raise PartgmError(f"the run was trained on '{corpus}', not on a synthetic corpus (data.corpus=hmm:...)")
    file = Path(str(header.get("path", ""))) / PROCESS_FILE
    return HMMProcess.load(file) if file.is_file() else process_of(corpus)


def format_table(result: dict) -> str:
    """The printed table of an ``eval oracle`` result."""
    lines = []
    if result.get("nelbo"):
        e = result["nelbo"]
        lines.append(f"excess NELBO {e['mean']:+.4f} ± {e['ci95']:.4f} nats/token (paired with the exact "
                     f"denoiser; plain {e['plain']['mean']:+.4f} ± {e['plain']['ci95']:.4f}; {e['draws']} fresh "
                     f"draws; true NLL {e['true_nll_per_token']['mean']:.4f})")
    lines.append(f"{'sampler':16s} {'steps':>5s} {'excess NLL':>18s} {'unigram TV (floor)':>22s} "
                 f"{'bigram TV (floor)':>22s} {'tok/s':>8s}")
    for r in result.get("samples", []):
        x, u, b = r["excess_nll"], r["unigram_tv"], r["bigram_tv"]
        lines.append(f"{r['sampler']:16s} {r['steps']:5d} {x['mean']:+9.4f} ± {x['ci95']:.4f} "
                     f"{u['value']:.4f}±{u['ci95']:.4f} ({r['unigram_tv_true_draws']['value']:.4f}) "
                     f"{b['value']:.4f}±{b['ci95']:.4f} ({r['bigram_tv_true_draws']['value']:.4f}) "
                     f"{r['tokens_per_s']:8.0f}" + (f"  [{r['invalid_samples']} invalid]" if r["invalid_samples"] else "")
                     + (f"  exact denoiser {r['ceiling']['excess_nll']['mean']:+.4f}" if r.get("ceiling") else ""))
    return "\n".join(lines)


def evaluate_oracle(target: str | Path, samplers: list[str], steps: list[int], num_samples: int = 256,
                    batch: int = 64, seed: int = 0, family: str = "partition", length: int = 64,
                    nelbo_draws: int = 256, guidance: float = 0.0, weights: str = "ema",
                    device: str = "cpu", ceiling: bool = False) -> dict:
    """(a) and (b) for ``target`` (see ``load_target``) at every sampler x step count. ``ceiling`` (a run
    only): each point also holds the exact denoiser's, with the same sampler and steps (``ceiling``;
    None where the sampler cannot drive it: the encoder cache equals ``uniform`` there, AR is exact)."""
    from partgm.algorithms.oracle import FAMILIES, oracle_denoiser
    from partgm.samplers import get_sampler

    algorithm, model, process, about = load_target(target, family, length, weights, device)
    for name in samplers:
        get_sampler(algorithm, name)  # unknown names fail before any work
    result: dict[str, Any] = {"target": about, "process": process.summary(), "length": algorithm.space.length,
                              "seed": seed}
    if nelbo_draws:
        result["nelbo"] = excess_nelbo(algorithm, model, process, nelbo_draws, batch, seed, device)
    exact = None
    by_algorithm = {name: family for family, name in FAMILIES.items()}
    family_of_run = by_algorithm.get(algorithm.name, algorithm.sampler_family)
    if ceiling and about["kind"] == "run" and family_of_run in FAMILIES:
        exact = oracle_denoiser(process, algorithm.space, family_of_run, algorithm.schedule)
    result["samples"] = []
    for name in samplers:
        for n_steps in steps:
            record = {"sampler": name, **sample_quality(algorithm, model, process, name, n_steps, num_samples, batch,
                                                        seed, guidance, device)}
            if ceiling:
                usable = exact is not None and name != "cached"
                record["ceiling"] = sample_quality(*exact, process, name, n_steps, num_samples, batch, seed,
                                                   guidance) if usable else None
            result["samples"].append(record)
    return result
