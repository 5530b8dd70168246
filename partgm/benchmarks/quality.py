"""``partgm bench quality``: PGM, MDLM and AR trained on a synthetic corpus at equal training FLOPs, then
the quality-speed frontier against the truth: excess sample NLL (``evaluation.oracle``) vs sampling
tokens/s for every sampler and step count, the PGM encoder cache at each refresh, the adaptive
``threshold`` / ``eb`` samplers of PGM and MDLM at each bound (network calls recorded), and the exact
denoiser's curve (the ceiling no trained model can pass with that sampler); several training seeds,
an interval on every point (across seeds: Student t; within a seed: the Monte-Carlo interval).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from partgm.benchmarks.frontier import frontier_settings
from partgm.benchmarks.timing import environment, machine_load
from partgm.samplers.adaptive import AdaptiveSampler, EntropyBoundSampler, ThresholdSampler
from partgm.samplers.dual_cache import DualCacheSampler

# two-sided 97.5% Student t quantiles by degrees of freedom (intervals across training seeds)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
CPU_CORPUS = "hmm:states=32,vocab=64,concentration=0.05,emission=0.02,seed=0,docs=20000"
PAPER_CORPUS = "hmm:states=256,vocab=1024,concentration=0.02,emission=0.005,seed=0,docs=200000"


@dataclass
class QualitySettings:
    """What ``bench quality`` trains and measures. ``budget``: the training FLOPs, as this many MDLM steps
    of ``batch`` x ``length``; PGM and AR get the step count that spends the same FLOPs."""

    corpus: str = CPU_CORPUS
    length: int = 64
    presets: dict = field(default_factory=lambda: {"pgm": "cpu-tiny", "mdlm": "cpu-tiny", "ar": "cpu-tiny"})
    algos: tuple = ("pgm", "mdlm", "ar")
    budget: int = 3000
    batch: int = 32
    lr: float = 1e-3
    seeds: tuple = (0, 1, 2)
    steps: tuple = (8, 16, 32, 63)
    refresh: tuple = (1, 2, 4, 8, 0)
    thresholds: tuple = ()  # PGM and MDLM ``threshold`` sampler points (approximate), each uncapped
    entropy_bounds: tuple = ()  # PGM and MDLM ``eb`` sampler points (approximate), each uncapped
    num_samples: int = 256
    sample_batch: int = 128
    nelbo_draws: int = 256
    oracle: bool = True
    guidance: float = 0.0  # class-conditional data: classifier-free guidance of every sampler
    all_samplers: bool = False  # text: also binomial, ancestral, confidence and halton
    device: str = "cpu"

    @classmethod
    def paper(cls) -> QualitySettings:
        """Paper-sized: L 1024 over a 256-state, 1024-id HMM, the paper's model shapes (a GPU)."""
        return cls(corpus=PAPER_CORPUS, length=1024, budget=100_000, batch=256, lr=3e-4,
                   presets={"pgm": "pgm-6-6-d768", "mdlm": "mdlm-small", "ar": "mdlm-small"},
                   steps=(8, 32, 128, 512, 1023), num_samples=512, sample_batch=64, nelbo_draws=1024,
                   device="cuda")


def _config(s: QualitySettings, algo: str, seed: int, steps: int, cache: Path):
    from partgm.resolve import resolve_config

    return resolve_config(overrides=[
        f"algo={algo}", f"preset={s.presets.get(algo) or next(iter(s.presets.values()))}", "model.dropout=0.0",
        f"data.corpus={s.corpus}",
        f"data.length={s.length}", f"data.cache_dir={cache}", f"train.steps={steps}", f"train.global_batch={s.batch}",
        f"train.lr={s.lr}", f"train.warmup_steps={min(100, steps // 10)}", f"train.seed={seed}",
        f"train.eval_every={steps}", f"train.save_every={steps}", "train.eval_batches=4", "train.keep_last=1",
        "train.ema_decay=0.999", "train.progress=false", f"train.device={s.device}", f"train.log_every={steps}",
    ])


def data_space(s: QualitySettings):
    """The TokenSpace of the settings' corpus (text with BOS, or a class-conditional grid)."""
    from partgm.algorithms import TokenSpace
    from partgm.data.synthetic import layout, parse_spec

    lay = layout(s.corpus, s.length)
    classes = parse_spec(s.corpus)[1]["classes"] if lay["grid"] else 0
    return TokenSpace(lay["vocab_size"], s.length, lay["bos_id"], classes, tuple(lay["grid"]) if lay["grid"] else None)


def step_flops(s: QualitySettings, algo: str, cache: Path) -> float:
    """Analytic FLOPs of one training step (forward + backward) of ``algo`` at the settings' shapes."""
    from partgm.algorithms import build_algorithm
    from partgm.benchmarks.accounting import train_flops

    cfg = _config(s, algo, 0, 1, cache)
    algorithm = build_algorithm(cfg, data_space(s))
    model = algorithm.build_model(cfg.model)
    x = torch.zeros(s.batch, s.length, dtype=torch.long)
    resolved = model.layout_for(x) if hasattr(model, "layout_for") else "dense"
    network = {"pgm-image": "pgm", "maskgit": "mdlm", "mdlm-complement": "mdlm"}.get(algo, algo)
    return float(train_flops(network, resolved, model.cfg, s.batch, s.length, algorithm.vocab_size,
                             algorithm.schedule)["flops"])


def train_runs(s: QualitySettings, out_dir: Path, log=print) -> dict[tuple[str, int], dict]:
    """Train (or reuse, when complete) one run per algorithm and seed at equal FLOPs. Returns
    {(algo, seed): {"run_dir", "train_steps", "train_flops", "train_seconds"}}."""
    from partgm.data import prepare_dataset
    from partgm.engine import train
    from partgm.run.layout import list_checkpoints

    cache = out_dir / "data"
    data = prepare_dataset(s.corpus, "hmm", s.length, 0.02, cache, progress=False)
    flops = {algo: step_flops(s, algo, cache) for algo in s.algos}
    budget = s.budget * step_flops(s, "mdlm", cache)
    runs = {}
    for seed in s.seeds:
        for algo in s.algos:
            steps = max(1, round(budget / flops[algo]))
            run_dir = out_dir / "runs" / f"{algo}-seed{seed}"
            saved = list_checkpoints(run_dir) if run_dir.exists() else []
            done = any(int(c.name.split("_")[-1]) >= steps for c in saved)
            start = time.perf_counter()
            if not done:  # an interrupted run resumes
                train(_config(s, algo, seed, steps, cache), data, run_dir, resume=bool(saved))
            seconds = time.perf_counter() - start
            log(f"{algo} seed {seed}: {steps} steps ({steps * flops[algo] / 1e12:.3g} TFLOP) "
                f"{'reused' if done else f'trained in {seconds:.0f}s'}")
            runs[(algo, seed)] = {"run_dir": str(run_dir), "train_steps": steps, "train_flops": steps * flops[algo],
                                  "train_seconds": None if done else seconds}
    return runs


def sampler_points(algo: str, s: QualitySettings) -> list[tuple[str, object, list[int]]]:
    """(label, sampler, step counts) of each curve of an algorithm: PGM exact and the cache at each refresh,
    MDLM fast-ancestral and the dual cache at each refresh, AR left to right (one point), MaskGIT / pgm-image confidence and Halton; the
    exact denoiser in each parallel family of the data (``oracle_families``)."""
    steps = list(s.steps)
    curves = {"mdlm": ["fast-ancestral"], "mdlm-complement": ["fast-ancestral"], "maskgit": ["confidence", "halton"],
              "pgm-image": ["halton", "confidence", "uniform"]}
    if s.all_samplers:  # the samplers the parallel text families share
        curves.update({"mdlm": ["fast-ancestral", "ancestral", "confidence", "halton"],
                       "mdlm-complement": ["fast-ancestral", "ancestral", "confidence", "halton"]})
    adaptive = [(f"threshold {t:g}", ThresholdSampler(t), [s.length]) for t in s.thresholds]
    adaptive += [(f"eb {g:g}", EntropyBoundSampler(g), [s.length]) for g in s.entropy_bounds]  # steps L: no cap
    if algo == "pgm":
        extra = [(name, name, steps) for name in ("binomial", "confidence", "halton")] if s.all_samplers else []
        return [(label, sampler, steps) for _, label, sampler in frontier_settings(list(s.refresh))] + extra + adaptive
    if algo == "ar":
        return [("kv-cache", "ancestral", [s.length - 1])]
    if algo == "oracle":  # the adaptive rules on the exact denoiser: what parallel decoding alone costs
        return [(f"{name} ({family})", name, steps) for name, family in oracle_families(s).items()] + [
            (f"{label} (partition)", sampler, steps) for label, sampler, steps in adaptive]
    if algo in ("mdlm", "mdlm-complement"):
        cached = [(f"dual-cache r={r or 'never'}", DualCacheSampler(r), steps) for r in s.refresh]
        return [(name, name, steps) for name in curves[algo]] + cached + adaptive
    return [(name, name, steps) for name in curves[algo]]


def oracle_families(s: QualitySettings) -> dict[str, str]:
    """{sampler: family} of the exact denoiser's curves: text as PGM and MDLM sample it, grids as MaskGIT."""
    if data_space(s).grid:
        return {"confidence": "maskgit", "halton": "maskgit", "uniform": "pgm-image"}
    if s.all_samplers:
        return {"uniform": "partition", "binomial": "partition", "fast-ancestral": "masked",
                "confidence": "masked", "halton": "masked"}
    return {"uniform": "partition", "fast-ancestral": "masked"}


def measure(s: QualitySettings, runs: dict, on_record=None) -> list[dict]:
    """One record per (algo, sampler, steps, seed): excess sample NLL, n-gram TV and tokens/s, plus the
    run's excess NELBO (once per run, in every record of it)."""
    from partgm.algorithms.oracle import oracle_denoiser
    from partgm.data.synthetic import process_of
    from partgm.evaluation.oracle import excess_nelbo, sample_quality
    from partgm.run.checkpoint import load_run

    env = environment(torch.device(s.device), "fp32")
    process, space, families = process_of(s.corpus), data_space(s), oracle_families(s)
    records = []
    for seed in s.seeds:
        targets = [(algo, runs[(algo, seed)]) for algo in s.algos if (algo, seed) in runs]
        for algo, info in targets + ([("oracle", None)] if s.oracle else []):
            nelbo, run = None, None
            if info is not None:
                run = load_run(Path(info["run_dir"]), device=s.device)
                nelbo = excess_nelbo(run.algorithm, run.model, process, s.nelbo_draws, s.sample_batch, seed, s.device)
            for label, sampler, steps_list in sampler_points(algo, s):
                algorithm, model = (run.algorithm, run.model) if run is not None else oracle_denoiser(
                    process, space, families.get(getattr(sampler, "name", sampler), "partition"))
                for steps in steps_list:
                    calls = sampler.call_counts if isinstance(sampler, AdaptiveSampler) else None
                    if calls is not None:
                        calls.clear()
                    q = sample_quality(algorithm, model, process, sampler, steps, s.num_samples, s.sample_batch,
                                       seed, s.guidance, s.device)
                    record = {"bench": "quality", "algo": algo, "variant": label, "seed": seed, "steps": steps,
                              "corpus": s.corpus, "length": s.length, "preset": s.presets.get(algo, "exact"),
                              **q, "excess_nelbo": nelbo, **(info or {}), **env, **machine_load(),
                              "network_calls_per_seq": float(np.mean(calls)) if calls else None}
                    records.append(record)
                    if on_record is not None:
                        on_record(record)
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Per (algo, variant, steps): the mean over seeds of excess NLL, bigram TV excess and tokens/s, each
    with a 95% interval across seeds (Student t; the within-seed interval when there is one seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["algo"], r["variant"], r["steps"]), []).append(r)
    out = []
    for (algo, variant, steps), rows in groups.items():
        point = {"algo": algo, "variant": variant, "steps": steps, "seeds": len(rows)}
        for key in ("excess_nll", "bigram_tv_excess", "unigram_tv_excess"):
            point[key] = _across([r[key]["mean"] for r in rows], rows[0][key]["ci95"])
        point["tokens_per_s"] = _across([r["tokens_per_s"] for r in rows], float("nan"))
        calls = [r["network_calls_per_seq"] for r in rows if r.get("network_calls_per_seq") is not None]
        point["network_calls_per_seq"] = float(np.mean(calls)) if calls else None
        point["invalid_fraction"] = float(np.mean([r["invalid_samples"] / r["num_samples"] for r in rows]))
        nelbos = [r["excess_nelbo"]["mean"] for r in rows if r.get("excess_nelbo")]
        if nelbos:
            point["excess_nelbo"] = _across(nelbos, rows[0]["excess_nelbo"]["ci95"])
        out.append(point)
    return out


def speed_targets(points: list[dict], reference: tuple[str, str] = ("mdlm", "fast-ancestral"),
                  ar: tuple[str, str] = ("ar", "kv-cache")) -> list[dict]:
    """Speed at equal quality, from ``summarize``'s points: for a reference point (MDLM-best at its most
    steps, AR with its KV cache), the fastest PGM point and the fastest point of the reference's own
    algorithm whose excess NLL and bigram TV excess are no worse than the reference's (mean at most the
    reference's mean + its 95% half-width), with the tokens/s ratio and its 95% half-width (delta method
    over the seed intervals). ``fastest`` is None when no point qualifies: ``best`` then names the point
    of lowest excess NLL."""
    def find(algo: str, variant: str) -> dict | None:
        rows = [p for p in points if p["algo"] == algo and p["variant"] == variant]
        return max(rows, key=lambda p: p["steps"]) if rows else None

    def name(p: dict) -> dict:
        return {"algo": p["algo"], "variant": p["variant"], "steps": p["steps"],
                "excess_nll": p["excess_nll"], "bigram_tv_excess": p["bigram_tv_excess"],
                "tokens_per_s": p["tokens_per_s"]}

    out = []
    for ref in (find(*reference), find(*ar)):
        if ref is None:
            continue
        bound = {k: ref[k]["mean"] + ref[k]["ci95"] for k in ("excess_nll", "bigram_tv_excess")}
        for algo in dict.fromkeys(("pgm", ref["algo"])):
            rows = [p for p in points if p["algo"] == algo and p is not ref]
            if not rows:
                continue
            good = [p for p in rows if all(p[k]["mean"] <= bound[k] for k in bound)]
            target = {"reference": name(ref), "candidates": algo}
            if good:
                fast = max(good, key=lambda p: p["tokens_per_s"]["mean"])
                a, b = fast["tokens_per_s"], ref["tokens_per_s"]
                ratio = a["mean"] / b["mean"]
                target |= {"fastest": name(fast), "speedup": {
                    "mean": ratio, "ci95": ratio * math.hypot(a["ci95"] / a["mean"], b["ci95"] / b["mean"])}}
            else:
                target |= {"fastest": None, "best": name(min(rows, key=lambda p: p["excess_nll"]["mean"]))}
            out.append(target)
    return out


def _across(values: list[float], single_ci: float) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return {"mean": float(v.mean()), "ci95": float(single_ci)}
    t = _T975.get(len(v) - 1, 1.96)
    return {"mean": float(v.mean()), "ci95": float(t * v.std(ddof=1) / math.sqrt(len(v)))}


def plot_quality(points: list[dict], out_png: Path, title: str = "") -> Path:
    """Excess sample NLL (nats/token) vs sampling tokens/s, one curve per (algo, sampler) over the step
    counts, 95% intervals as error bars; the exact denoiser's curves dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6.5))
    palette = plt.get_cmap("tab20")
    curves: dict[tuple, list[dict]] = {}
    for p in points:
        curves.setdefault((p["algo"], p["variant"]), []).append(p)
    for i, ((algo, variant), rows) in enumerate(sorted(curves.items())):
        rows.sort(key=lambda p: p["steps"])
        ax.errorbar([p["tokens_per_s"]["mean"] for p in rows], [p["excess_nll"]["mean"] for p in rows],
                    yerr=[p["excess_nll"]["ci95"] for p in rows], marker="osD^v"[i // 20 % 5], capsize=3,
                    color=palette(i % 20),
                    linestyle="--" if algo == "oracle" else "-", label=f"{algo} {variant}")
        for p in rows:
            ax.annotate(str(p["steps"]), (p["tokens_per_s"]["mean"], p["excess_nll"]["mean"]), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set(xscale="log", xlabel="sampling tokens / s", ylabel="excess sample NLL (nats / token; 0 = the process)",
           title=title or "Quality vs speed against the truth (numbers: steps)")
    ax.title.set_fontsize(8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
