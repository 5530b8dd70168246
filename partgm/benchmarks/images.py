"""``partgm bench images``: images/s of MaskGIT (confidence, Halton) vs PGM (Halton, confidence) with
random weights, at the digits size and at the paper's ImageNet-256 size (1,024 tokens of 16,384 codes,
1,000 classes, hidden 1024: 24 MaskGIT blocks vs PGM 12/12), with and without guidance. JSON + PNG.
Torch and matplotlib are imported inside the functions (``partgm --help`` stays fast)."""

from __future__ import annotations

import time
import uuid
from functools import partial
from pathlib import Path

# size -> (grid, vocab, classes, {algo: model overrides})
IMAGE_BENCH_SIZES: dict[str, tuple[tuple[int, int], int, int, dict[str, list[str]]]] = {
    "digits": ((8, 8), 17, 10, {
        "maskgit": ["model.hidden_size=96", "model.n_heads=4", "model.cond_dim=96", "model.n_blocks=4"],
        "pgm-image": ["model.hidden_size=96", "model.n_heads=4", "model.cond_dim=96",
                      "model.n_encoder_blocks=2", "model.n_decoder_blocks=2"],
    }),
    "paper": ((32, 32), 16384, 1000, {
        "maskgit": ["model.hidden_size=1024", "model.n_heads=16", "model.cond_dim=1024", "model.n_blocks=24"],
        "pgm-image": ["model.hidden_size=1024", "model.n_heads=16", "model.cond_dim=1024",
                      "model.n_encoder_blocks=12", "model.n_decoder_blocks=12"],
    }),
}
IMAGE_BENCH_VARIANTS = ("maskgit/confidence", "maskgit/halton", "pgm-image/halton", "pgm-image/confidence")


def bench_images(
    sizes: list[str], variants: list[str], steps_grid: list[int], guidances: list[float], batch: int,
    device_name: str = "auto", warmup: int = 1, repeats: int = 3, seed: int = 0, on_record=None,
) -> list[dict]:
    """One record per (size, variant, steps, guidance): latency per batch of class-conditional samples and
    images/s = batch / latency. Records share a ``run_id`` and carry the machine, threads and load."""
    import torch

    from partgm.algorithms import TokenSpace, build_algorithm
    from partgm.benchmarks.timing import environment, time_call
    from partgm.devices import resolve_device
    from partgm.models import randomize_
    from partgm.resolve import resolve_config
    from partgm.samplers import SamplingOptions, generate, make_prompt

    device = resolve_device(device_name)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    records = []
    for size in sizes:
        grid, vocab, classes, shapes = IMAGE_BENCH_SIZES[size]
        space = TokenSpace(vocab, grid[0] * grid[1], None, num_classes=classes, grid=grid)
        for variant in variants:
            algo, sampler = variant.split("/")
            cfg = resolve_config(overrides=[f"algo={algo}", "model.dropout=0.0", *shapes[algo]])
            algorithm = build_algorithm(cfg, space)
            model = randomize_(algorithm.build_model(cfg.model), seed=seed).to(device).eval()
            labels = torch.arange(batch, device=device) % classes
            for steps in steps_grid:
                for w in guidances:
                    generator = torch.Generator(device=device).manual_seed(seed)
                    options = SamplingOptions(steps=steps, guidance=w)

                    prompt = make_prompt(batch, space.length, None, device=device, labels=labels)
                    run = partial(generate, algorithm, model, prompt, options, sampler, generator)
                    timing = time_call(run, device, warmup, repeats)
                    record = {
                        "bench": "images", "run_id": run_id, "size": size, "algo": algo, "sampler": sampler,
                        "model": " ".join(shapes[algo]), "n_params": sum(p.numel() for p in model.parameters()),
                        "grid": list(grid), "vocab_size": vocab, "num_classes": classes, "batch": batch,
                        "steps": steps, "guidance": w, **timing,
                        "images_per_s": batch / timing["latency_s_mean"], **environment(device, "fp32"),
                        "includes_vq_decoding": False,
                    }
                    records.append(record)
                    if on_record is not None:
                        on_record(record)
    return records


def plot_image_bench(records: list[dict], out_png: Path) -> Path:
    """images/s vs steps, one panel per size, one line per algorithm/sampler/guidance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from partgm.run.checkpoint import atomic_write_bytes

    sizes = sorted({r["size"] for r in records})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.2), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in records:
            if r["size"] == size:
                lines.setdefault(f"{r['algo']} {r['sampler']} w={r['guidance']:g}", []).append(
                    (r["steps"], r["images_per_s"]))
        for label, points in sorted(lines.items()):
            points.sort()
            style = "-" if label.startswith("pgm") else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label)
        first = next(r for r in records if r["size"] == size)
        ax.set(yscale="log", xlabel="sampling steps", ylabel="images / s",
               title=f"{size}: {first['grid'][0]}x{first['grid'][1]} tokens, batch {first['batch']}")
        ax.set_xticks(sorted({r["steps"] for r in records}))
        ax.legend(fontsize=7)
    fig.suptitle(f"{records[0]['device']}, {records[0]['threads']} threads; load {records[0]['load_1m']:.1f}", fontsize=8)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out_png, buffer.getvalue())
    return out_png
