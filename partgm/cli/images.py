"""``partgm vq train`` and ``partgm eval fid-digits | fid``, and the image branch of ``partgm sample``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from partgm.cli.args import (
    SamplingDefaults,
    add_device,
    add_overwrite,
    add_sampling,
    add_weights,
    claim_out,
    draws,
    image_sampling,
    positive_float,
    positive_int,
    seed,
)
from partgm.errors import PartgmError


def cmd_sample_images(args: argparse.Namespace, d) -> None:
    """``partgm sample`` on an image run: ``--num-samples`` images per class -> PNG grid + codes JSONL
    (``d``: the command's ``Draws``)."""
    from partgm.fileio import claim_output, free_stem
    from partgm.run.checkpoint import load_run
    from partgm.run.images import (
        class_list,
        image_sample_paths,
        sample_images,
        with_image_sampling,
        write_image_samples,
    )
    from partgm.run.layout import SAMPLES

    run = load_run(Path(args.run_dir), weights=args.weights, device=args.device)
    d = with_image_sampling(run, d, image_sampling(args))
    o = d.options
    if args.out:
        out = Path(args.out)
        for path in image_sample_paths(out):
            claim_output(path, args.overwrite, "--out")
    else:
        out = Path(args.run_dir) / SAMPLES / f"images-steps{o.steps}-w{o.guidance:g}-seed{d.seed}"
        out = out if args.overwrite else free_stem(out, (".png", ".jsonl"))
    labels = class_list(run.data_header, args.classes)
    tokens = sample_images(run, d, labels, args.device)
    meta = {"sampler": d.sampler_name, "steps": o.steps, "guidance": o.guidance, "seed": d.seed,
            "temperature": o.temperature, "nucleus": o.nucleus, "precision": d.precision}
    png, jsonl = write_image_samples(out, run.data_header, tokens, labels, d.num_samples, meta)
    print(f"wrote {len(tokens)} images to {png} and their codes to {jsonl}")


def cmd_vq_train(args: argparse.Namespace) -> None:
    from partgm.fileio import claim_output
    from partgm.images.vq_quality import PREVIEW, train_vqvae_folder
    from partgm.images.vqvae import VQVAEConfig

    claim_output(args.out, args.overwrite, "VQ directory --out")
    cfg = VQVAEConfig(hidden=args.hidden, codebook_size=args.codebook_size, code_dim=args.code_dim,
                      downsample=args.downsample, background=args.background)
    if args.size % args.downsample:
        raise PartgmError(f"--size {args.size} is not a multiple of --downsample {args.downsample}: "
                          f"try --size {max(args.downsample, args.size // args.downsample * args.downsample)}")

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

    claim_out(args)
    print(json.dumps(evaluate_fid_digits(args.run_dir, draws(args), weights=args.weights, device=args.device,
                                         out=args.out, sampling=image_sampling(args))))


def cmd_fid(args: argparse.Namespace) -> None:
    from partgm.evaluation.images import evaluate_tf_fid

    claim_out(args)
    print(json.dumps(evaluate_tf_fid(args.run_dir, args.inception_weights, args.ref_stats, draws(args),
                                     weights=args.weights, device=args.device, out=args.out,
                                     sampling=image_sampling(args))))


def _image_eval_args(e: argparse.ArgumentParser, per_class: int) -> None:
    e.add_argument("run_dir")
    add_sampling(e, SamplingDefaults(steps=32, num_samples=per_class, batch=100, num_flag="--num-per-class",
                                     guidance=True))
    add_weights(e)
    add_device(e)
    e.add_argument("--out", help="JSON output (default RUN_DIR/eval/...)")
    add_overwrite(e, "an existing --out file")


def add(sub: argparse._SubParsersAction, eval_sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm vq train`` and ``partgm eval fid-digits | fid``."""
    vq = sub.add_parser("vq", help="image tokenizers").add_subparsers(dest="vq_command", required=True)
    p = vq.add_parser("train", help="train the small VQ-VAE on an image folder (class_name/*.png|jpg)")
    p.add_argument("folder")
    p.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    p.add_argument("--size", type=positive_int, default=32, help="images are resized to SIZE x SIZE")
    p.add_argument("--downsample", type=int, choices=(4, 8), default=4)
    p.add_argument("--codebook-size", type=positive_int, default=256)
    p.add_argument("--code-dim", type=positive_int, default=16)
    p.add_argument("--hidden", type=positive_int, default=64)
    p.add_argument("--steps", type=positive_int, default=2000)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--background", default="white", help="transparency is composited over it: white | black | "
                   "grey | #RRGGBB (kept in the VQ config: data preparation uses the same)")
    add_overwrite(p, "an existing VQ directory")
    p.set_defaults(func=cmd_vq_train)

    e = eval_sub.add_parser(
        "fid-digits", help="digits runs: class accuracy of conditional samples and FID-digits (NOT ImageNet FID)",
        description="Samples N per class, classifies them with a small digits classifier (trained once on the "
        "run's training split, cached in the data cache dir) and reports class accuracy and the Frechet distance "
        "of its 64-d features to the training split's.")
    _image_eval_args(e, 100)
    e.set_defaults(func=cmd_fid_digits)
    e = eval_sub.add_parser("fid", help="TF-Inception FID (torch-fidelity's port, weights from a local file)")
    _image_eval_args(e, 50)
    e.add_argument("--inception-weights", required=True,
                   help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    e.add_argument("--ref-stats", required=True, help=".npz with the reference set's mu and sigma")
    e.set_defaults(func=cmd_fid)
