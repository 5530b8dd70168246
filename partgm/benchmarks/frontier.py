"""``partgm bench frontier``: the quality-speed frontier of trained models: gen PPL (under a judge) and
unigram entropy vs sampling tokens/s, for PGM exact (``uniform``) and the encoder cache (``cached``,
refresh r), beside MDLM and AR, in one invocation (one ``run_id``), one JSON and one plot."""

from __future__ import annotations

from pathlib import Path

import torch

from partgm.benchmarks.timing import environment, machine_load, time_interleaved
from partgm.precision import resolved_precision
from partgm.run.sampling import Draws
from partgm.samplers import generate, make_prompt
from partgm.samplers.cached import CachedSampler


def frontier_settings(refresh: list[int]) -> list[tuple[str, str, object]]:
    """(algo, label, sampler) of the PGM points: exact, then the cache at each refresh (0: never)."""
    points = [("pgm", "uniform (exact)", "uniform")]
    points += [("pgm", f"cached r={r or 'never'}", CachedSampler(r)) for r in refresh]
    return points


def _sample(run, sampler, draws: Draws) -> list:
    """Token rows of ``draws.num_samples`` samples drawn in batches."""
    length = run.cfg.data.length
    device = next(run.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(draws.seed)
    rows: list = []
    while len(rows) < draws.num_samples:
        n = min(draws.batch, draws.num_samples - len(rows))
        prompt = make_prompt(n, length, run.algorithm.bos_id, device=device)
        rows += generate(run.algorithm, run.model, prompt, draws.options, sampler, generator,
                         draws.precision).tolist()
    return rows


def bench_frontier(
    runs: dict[str, Path], judge_dir: Path, draws: Draws, refresh: list[int], weights: str = "raw",
    device: str = "cpu", repeats: int = 3, on_record=None,
) -> list[dict]:
    """One record per point. ``runs``: {"pgm": dir, "mdlm": dir (optional), "ar": dir (optional)}. Quality:
    ``draws.num_samples`` samples per point (each point's own sampler; ``draws.sampler`` is not read);
    speed: one batch per point, timed round-robin over the points (one warm-up round, ``repeats`` timed
    rounds), so that the machine's drift hits every point alike."""
    from partgm.evaluation.genppl import judge_texts, load_judge, mean_entropy
    from partgm.run.checkpoint import load_run

    judge = load_judge(str(judge_dir), device=device, weights=weights)
    env = environment(torch.device(device), resolved_precision(device, draws.precision))
    options, batch = draws.options, draws.batch
    points = frontier_settings(refresh)
    if "mdlm" in runs:
        points.append(("mdlm", "mdlm fast-ancestral (best)", "fast-ancestral"))
    if "ar" in runs:
        points.append(("ar", "ar kv-cache", "ancestral"))
    loaded = {algo: load_run(Path(path), weights=weights, device=device) for algo, path in runs.items()}

    def one_batch(algo, sampler):
        run = loaded[algo]
        prompt = make_prompt(batch, run.cfg.data.length, run.algorithm.bos_id, device=device)
        return lambda: generate(run.algorithm, run.model, prompt, options, sampler,
                                torch.Generator(device=device).manual_seed(draws.seed), draws.precision)

    timings = time_interleaved({label: one_batch(algo, sampler) for algo, label, sampler in points},
                               torch.device(device), 1, repeats)
    records = []
    for algo, label, sampler in points:
        run = loaded[algo]
        rows = _sample(run, sampler, draws)
        skip = 0 if run.algorithm.bos_id is None else 1
        judged = judge_texts(judge, [run.tokenizer.decode(row[skip:]) for row in rows], batch_size=batch)
        length = run.cfg.data.length
        timing = timings[label]
        record = {
            "bench": "frontier", "algo": algo, "variant": label, "run_dir": str(runs[algo]), "weights": weights,
            "steps": options.steps, "length": length, "batch": batch, "num_samples": draws.num_samples,
            "nucleus": options.nucleus, "temperature": options.temperature, "seed": draws.seed,
            "latency_s_mean": timing["latency_s_mean"], "latency_s_std": timing["latency_s_std"],
            "repeats": repeats, "timing": "interleaved", "tokens_per_s": batch * length / timing["latency_s_mean"],
            "gen_ppl": judged["gen_ppl"], "entropy": mean_entropy(rows), "judge": str(judge_dir), **env,
            **machine_load(),
        }
        records.append(record)
        if on_record is not None:
            on_record(record)
    return records


def plot_frontier(records: list[dict], out_png: Path) -> Path:
    """gen PPL vs tokens/s, one point per setting (entropy in the label); PGM cache points joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pgm = [r for r in records if r["algo"] == "pgm"]
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
