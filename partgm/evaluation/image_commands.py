"""CLI wiring for images: the image branch of ``partgm sample``, ``partgm vq train`` and
``partgm eval fid-digits | fid``. Heavy imports happen inside the command functions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_image_sample_args(p: argparse.ArgumentParser) -> None:
    """The options of ``partgm sample`` that only image runs read."""
    p.add_argument("--class", dest="classes", type=int, action="append", metavar="ID",
                   help="image runs: a class to sample, one grid row each (repeatable; default all)")
    p.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance w (0: none)")
    p.add_argument("--guidance-schedule", choices=("constant", "linear"), default="constant")


def cmd_sample_images(args: argparse.Namespace) -> None:
    """``partgm sample`` on an image run: ``--num-samples`` images per class -> PNG grid + codes JSONL."""
    from partgm.engine import load_run
    from partgm.images.runs import class_list, sample_images, write_image_samples
    from partgm.samplers import SamplingOptions

    options = SamplingOptions(steps=args.steps, nucleus=args.nucleus, temperature=args.temperature,
                              guidance=args.guidance, guidance_schedule=args.guidance_schedule)
    run = load_run(Path(args.run_dir), weights=args.weights, device=args.device)
    labels = class_list(run.data_header, args.classes)
    tokens = sample_images(run, options, labels, args.num_samples, args.batch, args.seed, args.sampler, args.device)
    out = Path(args.out) if args.out else (
        Path(args.run_dir) / "samples" / f"images-steps{args.steps}-w{args.guidance:g}-seed{args.seed}")
    meta = {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "seed": args.seed}
    png, jsonl = write_image_samples(out, run.data_header, tokens, labels, args.num_samples, meta)
    print(f"wrote {len(tokens)} images to {png} and their codes to {jsonl}")


def cmd_vq_train(args: argparse.Namespace) -> None:
    from partgm.images.vq_quality import PREVIEW, train_vqvae_folder
    from partgm.images.vqvae import VQVAEConfig

    cfg = VQVAEConfig(hidden=args.hidden, codebook_size=args.codebook_size, code_dim=args.code_dim,
                      downsample=args.downsample, background=args.background)

    def progress(step: int, losses: dict[str, float]) -> None:
        if step % 100 == 0 or step == args.steps:
            print(json.dumps({"step": step, **{k: round(v, 5) for k, v in losses.items()}}), flush=True)

    q = train_vqvae_folder(args.folder, args.out, cfg, args.size, args.steps, args.lr, args.seed, progress)
    print(f"held-out ({q['val_images']} images): PSNR {q['val_psnr']:.2f} dB, MSE {q['val_mse']:.4f}, loss "
          f"{q['val_loss']:.4f}, codes used {q['codes_used']}/{cfg.codebook_size} ({q['codes_used_pct']:.1f}%), "
          f"code perplexity {q['code_perplexity']:.1f}; preview {Path(args.out) / PREVIEW}")
    side = args.size // args.downsample
    print(f"wrote {args.out}: use data.corpus={args.folder} data.tokenizer=vq:{args.out} data.length={side * side}")


def cmd_fid_digits(args: argparse.Namespace) -> None:
    from partgm.evaluation.images import evaluate_fid_digits

    print(json.dumps(evaluate_fid_digits(
        args.run_dir, num_per_class=args.num_per_class, steps=args.steps, sampler=args.sampler,
        guidance=args.guidance, temperature=args.temperature, batch=args.batch, seed=args.seed,
        weights=args.weights, device=args.device, out=args.out,
    )))


def cmd_fid(args: argparse.Namespace) -> None:
    from partgm.evaluation.images import evaluate_tf_fid

    print(json.dumps(evaluate_tf_fid(
        args.run_dir, args.inception_weights, args.ref_stats, num_per_class=args.num_per_class,
        steps=args.steps, sampler=args.sampler, guidance=args.guidance, temperature=args.temperature,
        batch=args.batch, seed=args.seed, weights=args.weights, device=args.device, out=args.out,
    )))


def _sampling_args(e: argparse.ArgumentParser, per_class: int) -> None:
    e.add_argument("run_dir")
    e.add_argument("--num-per-class", type=int, default=per_class, help="samples per class")
    e.add_argument("--steps", type=int, default=32)
    e.add_argument("--sampler", default="auto", help="confidence | halton | ... (auto: the algorithm's default)")
    e.add_argument("--guidance", type=float, default=0.0)
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--batch", type=int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--weights", choices=("ema", "raw"), default="ema")
    e.add_argument("--device", default="cpu")
    e.add_argument("--out", help="JSON output (default RUN_DIR/eval/...)")


def add_image_commands(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm vq train`` and ``partgm eval fid-digits | fid``."""
    vq = sub.add_parser("vq", help="image tokenizers").add_subparsers(dest="vq_command", required=True)
    p = vq.add_parser("train", help="train the small VQ-VAE on an image folder (class_name/*.png|jpg)")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    p.add_argument("--size", type=int, default=32, help="images are resized to SIZE x SIZE")
    p.add_argument("--downsample", type=int, choices=(4, 8), default=4)
    p.add_argument("--codebook-size", type=int, default=256)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--background", default="white", help="transparency is composited over it: white | black | "
                   "grey | #RRGGBB (kept in the VQ config: data preparation uses the same)")
    p.set_defaults(func=cmd_vq_train)

    e = eval_sub.add_parser(
        "fid-digits", help="digits runs: class accuracy of conditional samples and FID-digits (NOT ImageNet FID)",
        description="Samples N per class, classifies them with a small digits classifier (trained once on the "
        "run's training split, cached in the data cache dir) and reports class accuracy and the Frechet distance "
        "of its 64-d features to the training split's.")
    _sampling_args(e, 100)
    e.set_defaults(func=cmd_fid_digits)
    e = eval_sub.add_parser("fid", help="TF-Inception FID (torch-fidelity's port, weights from a local file)")
    _sampling_args(e, 50)
    e.add_argument("--inception-weights", required=True,
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    e.add_argument("--ref-stats", required=True, help=".npz with the reference set's mu and sigma")
    e.set_defaults(func=cmd_fid)
