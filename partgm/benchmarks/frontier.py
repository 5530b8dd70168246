"""``partgm bench frontier``: the quality-speed frontier of trained models: gen PPL (under a judge) and
unigram entropy vs sampling tokens/s and network calls per sequence, for PGM exact (``uniform``), the
encoder cache (``cached``, refresh r) and the adaptive samplers (``threshold`` tau, ``eb`` gamma), beside
MDLM (``fast-ancestral``, its adaptive samplers) and AR with its KV cache, in one invocation (one
``run_id``), one JSON and one plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from partgm.benchmarks.timing import environment, machine_load, time_interleaved
from partgm.precision import resolved_precision
from partgm.run.sampling import Draws
from partgm.samplers import Sampler, SamplingOptions, generate, get_sampler, make_prompt
from partgm.samplers.adaptive import AdaptiveSampler, EntropyBoundSampler, ThresholdSampler
from partgm.samplers.cached import CachedSampler
from partgm.samplers.cost import Workload
from partgm.samplers.dual_cache import DualCacheSampler

Point = tuple[str, str, object]  # (algo, label, sampler)


def frontier_settings(
    refresh: list[int], thresholds: list[float] = (), entropy_bounds: list[float] = (),
    algos: tuple[str, ...] = ("pgm",),
) -> list[Point]:
    """The points: PGM exact, the cache at each refresh (0: never); MDLM best and its dual cache at each
    refresh (when ``algos`` has it);
    then each adaptive setting for PGM and MDLM; AR with its KV cache (when ``algos`` has it)."""
    points: list[Point] = [("pgm", "uniform (exact)", "uniform")]
    points += [("pgm", f"cached r={r or 'never'}", CachedSampler(r)) for r in refresh]
    if "mdlm" in algos:
        points.append(("mdlm", "mdlm fast-ancestral (best)", "fast-ancestral"))
        points += [("mdlm", f"mdlm dual-cache r={r or 'never'}", DualCacheSampler(r)) for r in refresh]
    for algo in ("pgm", "mdlm"):
        if algo in algos:
            points += [(algo, f"{algo} threshold {t:g}", ThresholdSampler(t)) for t in thresholds]
            points += [(algo, f"{algo} eb {g:g}", EntropyBoundSampler(g)) for g in entropy_bounds]
    if "ar" in algos:
        points.append(("ar", "ar kv-cache", "ancestral"))
    return points


def _sample(run, sampler, draws: Draws, options: SamplingOptions) -> tuple[list, list[int]]:
    """(token rows of ``draws.num_samples`` samples drawn in batches, the network calls of each batch when
    the sampler records them)."""
    length = run.cfg.data.length
    device = next(run.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(draws.seed)
    rows: list = []
    calls: list[int] = []
    while len(rows) < draws.num_samples:
        n = min(draws.batch, draws.num_samples - len(rows))
        prompt = make_prompt(n, length, run.algorithm.bos_id, device=device)
        rows += generate(run.algorithm, run.model, prompt, options, sampler, generator, draws.precision).tolist()
        if isinstance(sampler, AdaptiveSampler):
            calls.append(len(sampler.last_widths))
    return rows, calls


def network_calls(run, sampler: Sampler, options: SamplingOptions, batch: int, calls: list[int]) -> float | None:
    """Network calls per sequence (every row of a batch takes part in each call): the mean recorded by an
    adaptive sampler, else the sampler's analytic count (``Sampler.flops``), else None."""
    if calls:
        return sum(calls) / len(calls)
    work = Workload(run.cfg.model, batch, run.cfg.data.length, options.steps, run.algorithm.vocab_size,
                    schedule=getattr(run.algorithm, "schedule", None))
    cost = sampler.flops(work)
    return None if cost is None else float(cost.forward_passes)


def bench_frontier(
    runs: dict[str, Path], judge_dir: Path, draws: Draws, refresh: list[int], weights: str = "raw",
    device: str = "cpu", repeats: int = 3, on_record=None, thresholds: list[float] = (),
    entropy_bounds: list[float] = (), adaptive_steps: int = 0,
) -> list[dict]:
    """One record per point (``frontier_settings``). ``runs``: {"pgm": dir, "mdlm": dir (optional), "ar": dir
    (optional)}. Quality: ``draws.num_samples`` samples per point (each point's own sampler;
    ``draws.sampler`` is not read); speed: one batch per point, timed round-robin over the points (one
    warm-up round, ``repeats`` timed rounds), so that the machine's drift hits every point alike. The
    adaptive points run with ``adaptive_steps`` as their cap on calls (0: the length, no cap)."""
    from partgm.evaluation.genppl import judge_texts, load_judge, mean_entropy
    from partgm.run.checkpoint import load_run

    judge = load_judge(str(judge_dir), device=device, weights=weights)
    env = environment(torch.device(device), resolved_precision(device, draws.precision))
    batch = draws.batch
    points = frontier_settings(refresh, thresholds, entropy_bounds, tuple(runs))
    loaded = {algo: load_run(Path(path), weights=weights, device=device) for algo, path in runs.items()}

    def options_of(algo, sampler) -> SamplingOptions:
        if not isinstance(sampler, AdaptiveSampler):
            return draws.options
        return replace(draws.options, steps=adaptive_steps or loaded[algo].cfg.data.length)

    def one_batch(algo, sampler):
        run = loaded[algo]
        prompt = make_prompt(batch, run.cfg.data.length, run.algorithm.bos_id, device=device)
        options = options_of(algo, sampler)
        return lambda: generate(run.algorithm, run.model, prompt, options, sampler,
                                torch.Generator(device=device).manual_seed(draws.seed), draws.precision)

    timings = time_interleaved({label: one_batch(algo, sampler) for algo, label, sampler in points},
                               torch.device(device), 1, repeats)
    records = []
    for algo, label, sampler in points:
        run = loaded[algo]
        options = options_of(algo, sampler)
        rows, calls = _sample(run, sampler, draws, options)
        chosen = sampler if isinstance(sampler, Sampler) else get_sampler(run.algorithm, sampler)
        skip = 0 if run.algorithm.bos_id is None else 1
        judged = judge_texts(judge, [run.tokenizer.decode(row[skip:]) for row in rows], batch_size=batch)
        length = run.cfg.data.length
        timing = timings[label]
        record = {
            "bench": "frontier", "algo": algo, "variant": label, "sampler": chosen.name,
            "bound": getattr(chosen, "bound", None), "run_dir": str(runs[algo]), "weights": weights,
            "steps": options.steps, "length": length, "batch": batch, "num_samples": draws.num_samples,
            "nucleus": options.nucleus, "temperature": options.temperature, "seed": draws.seed,
            "latency_s_mean": timing["latency_s_mean"], "latency_s_std": timing["latency_s_std"],
            "repeats": repeats, "timing": "interleaved", "tokens_per_s": batch * length / timing["latency_s_mean"],
            "network_calls_per_seq": network_calls(run, chosen, options, batch, calls),
            "gen_ppl": judged["gen_ppl"], "entropy": mean_entropy(rows), "judge": str(judge_dir), **env,
            **machine_load(),
        }
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def plot_frontier(records: list[dict], out_png: Path) -> Path:
    """gen PPL vs tokens/s, one point per setting (entropy in the label); PGM exact and cache points joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pgm = [r for r in records if r["algo"] == "pgm" and r.get("sampler", "cached") in ("uniform", "cached")]
    ax.plot([r["tokens_per_s"] for r in pgm], [r["gen_ppl"] for r in pgm], color="C0", alpha=0.4)
    for i, r in enumerate(sorted(records, key=lambda r: r["tokens_per_s"])):
        color = {"pgm": "C0", "mdlm": "C1", "ar": "C2"}[r["algo"]]
        marker = "*" if "exact" in r["variant"] else "o"
        ax.scatter(r["tokens_per_s"], r["gen_ppl"], color=color, marker=marker, s=60, zorder=3)
        ax.annotate(f"{r['variant']}\nH={r['entropy']:.2f}", (r["tokens_per_s"], r["gen_ppl"]), fontsize=7,
                    textcoords="offset points", xytext=(5, 14 * (i % 3) - 14))
    first = records[0]
    ax.set(xscale="log", xlabel="sampling tokens / s", ylabel="gen PPL (AR judge; lower is better)",
           title=f"Quality vs speed, {first['steps']} steps, L {first['length']}, batch {first['batch']}, "
                 f"{first['device']}\nrun {first['run_id']}, load {first['load_1m']:.1f}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
