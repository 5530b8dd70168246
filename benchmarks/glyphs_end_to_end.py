"""Real images end to end: glyphs of the DejaVu fonts (Debian package fonts-dejavu-core) rendered to RGB
-> ``partgm vq train`` -> MaskGIT and PGM-image at equal compute -> sample grids, FID-glyphs, images/s.

    python benchmarks/glyphs_end_to_end.py OUT [--scale tiny|small|full] [--seeds N] [--before]
                                               [--fonts DIR] [--train-threads N]

- Data: 10 classes (the letters A-J), ``per_class`` images each, every one a random DejaVu face (22
  faces), size, rotation (+-15 degrees), offset and fore-/background colours, rendered at 64 px and
  resized to 32x32 RGB (full: 500 a class, 5,000 images; small: 300 a class, 3,000 images, shorter
  training, for about 40 minutes on 2 quiet cores).
- Tokenizer: the small VQ-VAE, 256 codes, downsampling 4 (8x8 = 64 codes an image).
- Models at equal compute: the same width, batch and steps; MaskGIT 4 blocks vs PGM 2 + 2, in today's
  defaults (the authors' image layout / MaskGIT network / objective), ``--seeds`` training seeds each
  (default 3). ``--before`` adds partgm's earlier models (``model.image_layout=grid2d``,
  ``model.network=dit``), seed 0 only.
- Sampling: each sampler with the authors' numbers (``after``) and partgm's earlier ones (``before``:
  ``--schedule partgm``, no first-step temperature change, constant guidance; approximately the earlier
  samplers, whose first Halton step was sharpened instead), guidance 0 and 2.
- FID-glyphs: the Frechet distance of the digits classifier's features (an MLP on 8x8 grey levels,
  ``images.digits_classifier``), trained here on the real glyphs pooled to 8x8, between the decoded
  samples and the real training images; class accuracy of the conditional samples. A sanity metric
  like FID-digits, NOT ImageNet FID. images/s: sampling only (VQ decoding excluded), one thread.

Writes OUT/results.jsonl (one record per model x seed x sampler x sampler numbers x guidance, FID with
its bootstrap interval over the samples), OUT/summary.json and OUT/summary.md (the mean over training
seeds with a t interval over seeds), OUT/grid-*.png and the runs under OUT/runs. Timings are valid
only on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from partgm.cli import main as partgm

CLASSES = "ABCDEFGHIJ"
SCALES = {  # per_class, vq steps, train steps, batch, hidden, samples per class, sampling steps
    "tiny": {"per_class": 6, "vq_steps": 20, "steps": 4, "batch": 8, "hidden": 32, "per_class_eval": 2, "steps_s": 4},
    "small": {"per_class": 300, "vq_steps": 800, "steps": 1000, "batch": 32, "hidden": 96, "per_class_eval": 50,
              "steps_s": 32},
    "full": {"per_class": 500, "vq_steps": 2000, "steps": 2000, "batch": 64, "hidden": 128, "per_class_eval": 100,
             "steps_s": 32},
}


def render_glyphs(out: Path, fonts: list[Path], per_class: int, seed: int = 0) -> None:
    """OUT/<letter>/<i>.png: 32x32 RGB glyphs, one random face, size, angle, offset and colours each."""
    rng = random.Random(seed)
    for letter in CLASSES:
        folder = out / letter
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = tuple(rng.randrange(256) for _ in range(3))
            fg = tuple((c + 96 + rng.randrange(64)) % 256 for c in bg)  # always far from the background
            canvas = Image.new("RGB", (64, 64), bg)
            font = ImageFont.truetype(str(rng.choice(fonts)), rng.randrange(34, 50))
            glyph = Image.new("L", (64, 64), 0)
            ImageDraw.Draw(glyph).text((32 + rng.randrange(-5, 6), 32 + rng.randrange(-5, 6)), letter, fill=255,
                                       font=font, anchor="mm")
            glyph = glyph.rotate(rng.uniform(-15, 15), resample=Image.BICUBIC)
            canvas.paste(Image.new("RGB", (64, 64), fg), (0, 0), glyph)
            canvas.resize((32, 32), Image.LANCZOS).save(folder / f"{i}.png")


def pooled_levels(images: np.ndarray) -> torch.Tensor:
    """[N, 32, 32, 3] in [0, 1] -> [N, 64] grey levels 0..16 (8x8 average pooling): the classifier input."""
    grey = torch.as_tensor(images, dtype=torch.float32).mean(-1)[:, None]
    return (torch.nn.functional.avg_pool2d(grey, 4).flatten(1) * 16).round().long()


def check(code: int, what: str) -> None:
    if code != 0:
        raise SystemExit(f"{what} failed (exit {code})")


def evaluate(run_dir: Path, out: Path, label: str, seed: int, scale: dict, classifier, real: torch.Tensor) -> list[dict]:
    from partgm.benchmarks.timing import environment
    from partgm.images.digits_classifier import class_accuracy, digits_fid_interval
    from partgm.images.grid import save_image_grid
    from partgm.run.checkpoint import load_run
    from partgm.run.images import decode_images, sample_images
    from partgm.run.sampling import Draws
    from partgm.samplers import SamplingOptions
    from partgm.samplers.image_schedules import ImageSampling
    from partgm.samplers.images import image_sampler

    run = load_run(run_dir)
    labels = list(range(len(CLASSES)))
    n = scale["per_class_eval"]
    records = []
    for name in ("confidence", "halton"):
        for schedule in ("authors", "partgm"):
            settings = ImageSampling() if schedule == "authors" else ImageSampling(schedule="partgm", temp_warmup=0)
            sampler = image_sampler(run.algorithm, name, settings)
            for w in (0.0, 2.0):
                options = SamplingOptions(steps=scale["steps_s"], guidance=w,
                                          guidance_schedule="auto" if schedule == "authors" else "constant")
                start = time.perf_counter()
                tokens = sample_images(run, Draws(options, sampler, n, 100, 0), labels)
                seconds = time.perf_counter() - start
                pixels = decode_images(run.data_header, tokens)
                levels = pooled_levels(pixels)
                truth = torch.tensor([c for c in labels for _ in range(n)])
                fid = digits_fid_interval(classifier, levels, real)
                record = {**environment(torch.device("cpu"), "fp32"),
                          "model": label, "seed": seed, "sampler": name, "sampler_numbers": schedule, "guidance": w,
                          "steps": scale["steps_s"], "num_images": len(tokens), "images_per_s": len(tokens) / seconds,
                          "fid_glyphs": fid["value"], "fid_glyphs_ci95": fid["ci95"],
                          "class_accuracy": class_accuracy(classifier, levels, truth)}
                records.append(record)
                print(json.dumps(record), flush=True)
                if w == 2.0 and schedule == "authors" and seed == 0:
                    save_image_grid(pixels, out / f"grid-{label}-{name}.png", n, row_labels=list(CLASSES))
    return records


def summarize(records: list[dict]) -> list[dict]:
    """Per (model, sampler, sampler numbers, guidance): the mean over training seeds of FID-glyphs, class
    accuracy and images/s, each with the half-width of its t 95% interval over seeds (None for one seed)."""
    from scipy import stats

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["sampler"], r["sampler_numbers"], r["guidance"]), []).append(r)
    rows = []
    for (model, sampler, numbers, w), rs in groups.items():
        row = {"model": model, "sampler": sampler, "sampler_numbers": numbers, "guidance": w, "seeds": len(rs)}
        for key in ("fid_glyphs", "class_accuracy", "images_per_s"):
            values = np.array([r[key] for r in rs])
            half = (stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / len(values) ** 0.5
                    if len(values) > 1 else None)
            row[key] = {"mean": float(values.mean()), "ci95": None if half is None else float(half)}
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(v: dict, fmt: str) -> str:
        return format(v["mean"], fmt) + ("" if v["ci95"] is None else " +- " + format(v["ci95"], fmt))

    lines = ["| model | sampler | numbers | w | seeds | FID-glyphs | class accuracy | images/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['sampler_numbers']} | {r['guidance']:g} | {r['seeds']} | "
                     f"{cell(r['fid_glyphs'], '.2f')} | {cell(r['class_accuracy'], '.3f')} | {cell(r['images_per_s'], '.0f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--scale", choices=tuple(SCALES), default="full")
    p.add_argument("--fonts", default="/usr/share/fonts/truetype/dejavu", help="the DejaVu .ttf directory")
    p.add_argument("--seeds", type=int, default=3, help="training seeds of each model (default 3)")
    p.add_argument("--before", action="store_true", help="also partgm's earlier models (seed 0)")
    p.add_argument("--train-threads", type=int, default=1, help="torch threads of the VQ and model training "
                   "(sampling, which is timed, always uses 1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    scale, out = SCALES[args.scale], Path(args.out)
    fonts = sorted(Path(args.fonts).glob("*.ttf"))
    if not fonts:
        raise SystemExit(f"no .ttf in {args.fonts}: apt-get install fonts-dejavu-core (or pass --fonts)")
    glyphs, vq, runs = out / "glyphs", out / "vq", out / "runs"
    render_glyphs(glyphs, fonts, scale["per_class"])
    threads = ["--threads", str(args.train_threads)]
    check(partgm(["vq", "train", *threads, str(glyphs), "--out", str(vq), "--size", "32", "--downsample", "4",
                  "--steps", str(scale["vq_steps"])]), "vq train")
    h = scale["hidden"]
    common = [f"data.corpus={glyphs}", f"data.tokenizer=vq:{vq}", "data.length=64", "data.val_fraction=0.1",
              f"data.cache_dir={out / 'cache'}", f"model.hidden_size={h}", "model.n_heads=4", f"model.cond_dim={h}",
              "model.dropout=0.0", f"train.steps={scale['steps']}", f"train.global_batch={scale['batch']}",
              "train.lr=1e-3", f"train.warmup_steps={max(1, scale['steps'] // 30)}", "train.ema_decay=0.999",
              f"train.eval_every={scale['steps']}", "train.eval_batches=2", f"train.save_every={scale['steps']}",
              "train.progress=false"]
    models = [(label, seed, extra) for seed in range(args.seeds) for label, extra in (
        ("maskgit", ["--algo", "maskgit", "model.n_blocks=4"]),
        ("pgm", ["--algo", "pgm-image", "model.n_encoder_blocks=2", "model.n_decoder_blocks=2"]))]
    if args.before:
        models += [("maskgit-before", 0, ["--algo", "maskgit", "model.n_blocks=4", "model.network=dit"]),
                   ("pgm-before", 0, ["--algo", "pgm-image", "model.n_encoder_blocks=2", "model.n_decoder_blocks=2",
                                      "model.image_layout=grid2d"])]
    from partgm.images.digits_classifier import class_accuracy, train_digits_classifier
    from partgm.images.vqvae import load_image_folder

    images, image_labels, _ = load_image_folder(glyphs, 32)
    real = pooled_levels(((images.permute(0, 2, 3, 1) + 1) / 2).numpy())
    classifier = train_digits_classifier(real, image_labels)
    real_accuracy = class_accuracy(classifier, real, image_labels)  # can the metric read the glyphs at all?
    records = []
    for label, seed, extra in models:
        run_dir = runs / f"{label}-seed{seed}"
        if not (run_dir / "checkpoints").is_dir():
            check(partgm(["train", *threads, "--run-dir", str(run_dir), *extra, *common, f"train.seed={seed}"]),
                  f"train {label} seed {seed}")
            torch.set_num_threads(1)
        records += evaluate(run_dir, out, label, seed, scale, classifier, real)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = summarize(records)
    note = (f"\nThe classifier's accuracy on the real glyphs it was trained on: {100 * real_accuracy:.1f}% "
            f"(chance: {100 / len(CLASSES):.0f}%).\n")
    (out / "summary.json").write_text(json.dumps({"classifier_accuracy_on_real": real_accuracy, "rows": rows},
                                                 indent=1) + "\n")
    (out / "summary.md").write_text(markdown(rows) + note)
    print(markdown(rows) + note)
    print(f"wrote {out / 'results.jsonl'} ({len(records)} records), summary.json, summary.md")


if __name__ == "__main__":
    main()
