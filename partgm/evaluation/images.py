"""Image evaluation: FID-digits and class accuracy of conditional samples (digits runs), and the
ImageNet-protocol TF-Inception FID (any image run). Every record names its feature extractor, resize,
sample count and reference set: FIDs under different protocols are not comparable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partgm.errors import PartgmError
from partgm.precision import resolved_precision
from partgm.run.layout import EVAL
from partgm.run.sampling import Draws
from partgm.samplers import SamplingOptions


def default_draws(per_class: int) -> Draws:
    """The image evaluations' default: ``per_class`` samples per class at 32 steps, batches of 100."""
    return Draws(SamplingOptions(steps=32), num_samples=per_class, batch=100)


def digits_classifier_for(data: Any) -> tuple[Any, Path]:
    """The digits classifier of a prepared digits dataset: trained on its training split once and cached
    as ``<cache_dir>/digits-classifier-<input hash 12>.safetensors`` beside the data."""
    from partgm.images.digits_classifier import (
        load_digits_classifier,
        save_digits_classifier,
        train_digits_classifier,
    )

    path = data.path.parent / f"digits-classifier-{data.header['input_hash'][:12]}.safetensors"
    if path.is_file():
        return load_digits_classifier(path), path
    model = train_digits_classifier(np.array(data.train), np.array(data.labels["train"]))
    save_digits_classifier(model, path)
    return model, path


def _sample_run(run_dir: str | Path, draws: Draws, weights: str, device: str, sampling: Any = None):
    """(run, token grids [N, L], their labels [N] or None, the protocol fields of the record).
    ``sampling``: the authors' sampler options (``ImageSampling``; None: their defaults)."""
    from dataclasses import asdict

    from partgm.run.checkpoint import load_run
    from partgm.run.images import class_list, sample_images, with_image_sampling
    from partgm.samplers.image_schedules import ImageSampling

    run = load_run(Path(run_dir), weights=weights, device=device)
    if not run.data_header.get("grid"):
        raise PartgmError(f"run '{run_dir}' was not trained on image data")
    sampling = sampling or ImageSampling()
    draws = with_image_sampling(run, draws, sampling)
    labels = class_list(run.data_header, None)
    tokens = sample_images(run, draws, labels, device)
    n = draws.num_samples
    sample_labels = None if labels is None else torch.tensor([c for c in labels for _ in range(n)])
    o = draws.options
    protocol = {"run_dir": str(run_dir), "algo": run.cfg.algo, "step": run.step, "weights": weights,
                "sampler": draws.sampler_name, "steps": o.steps, "guidance": o.guidance,
                "guidance_schedule": o.guidance_schedule, "temperature": o.temperature, "nucleus": o.nucleus,
                "precision": resolved_precision(device, draws.precision), "seed": draws.seed,
                "sampler_options": asdict(sampling)}
    return run, tokens, sample_labels, protocol


def _write(record: dict[str, Any], out: str | Path | None, run_dir: str | Path, name: str) -> dict[str, Any]:
    from partgm.run.checkpoint import atomic_write_text

    path = Path(out) if out else Path(run_dir) / EVAL / name
    atomic_write_text(path, json.dumps(record, indent=2))
    return record


def evaluate_fid_digits(
    run_dir: str | Path, draws: Draws | None = None, *, weights: str = "ema", device: str = "cpu",
    out: str | Path | None = None, sampling: Any = None,
) -> dict[str, Any]:
    """Class accuracy of ``draws.num_samples`` conditional samples per digit (default 100 at 32 steps, by
    the cached classifier) and FID-digits (Frechet distance of its penultimate features, samples vs the
    training split)."""
    from partgm.data import PreparedData
    from partgm.images.digits_classifier import (
        class_accuracy,
        class_accuracy_ci95,
        digits_fid,
        digits_fid_interval,
    )
    from partgm.images.fid import fid_record

    draws = draws or default_draws(100)
    run, tokens, labels, protocol = _sample_run(run_dir, draws, weights, device, sampling)
    if (run.data_header.get("image") or {}).get("kind") != "digits":
        raise PartgmError(f"run '{run_dir}' was not trained on the digits: use `partgm eval fid`")
    data = PreparedData.load(run.data_header["path"])
    classifier, classifier_path = digits_classifier_for(data)
    reference = np.array(data.train)
    fid = digits_fid_interval(classifier, tokens, reference)
    accuracy = class_accuracy(classifier, tokens, labels)
    record = {
        **fid_record(
            fid["value"], metric="FID-digits",
            feature_extractor=f"partgm digits classifier, 64-d penultimate features ({classifier_path})",
            resize="none (8x8 tokens, 17 grey levels)", n_samples=len(tokens),
            reference=f"digits training split of {data.path} ({len(reference)} images)",
        ),
        "ci95": fid["ci95"],
        "ci95_method": "bootstrap over the samples (200 resamples): sampling noise, not training seeds",
        "class_accuracy": accuracy,
        "class_accuracy_ci95": class_accuracy_ci95(accuracy, len(tokens)),
        "classifier_val_accuracy": class_accuracy(classifier, np.array(data.val), np.array(data.labels["val"])),
        # the same distance for real held-out digits: what a perfect model would score at this sample size
        "val_split_fid_digits": digits_fid(classifier, np.array(data.val), reference),
        "val_split_n": len(data.val),
        **protocol,
    }
    name = f"fid-digits-{draws.sampler_name}-steps{draws.options.steps}-w{draws.options.guidance:g}.json"
    return _write(record, out, run_dir, name)


def evaluate_tf_fid(
    run_dir: str | Path, inception_weights: str | Path, ref_stats: str | Path, draws: Draws | None = None, *,
    weights: str = "ema", device: str = "cpu", out: str | Path | None = None, sampling: Any = None,
) -> dict[str, Any]:
    """ImageNet-protocol FID (``tf_inception_fid``) of decoded samples (``draws``: default 50 per class at
    32 steps) against ``ref_stats``. The weights and statistics files are checked before any sampling."""
    from partgm.images.fid import tf_inception_fid
    from partgm.run.images import decode_images

    for path, what in ((inception_weights, "Inception weights"), (ref_stats, "FID reference statistics")):
        if not Path(path).is_file():
            raise PartgmError(f"{what} file {path} not found (nothing is downloaded)")
    draws = draws or default_draws(50)
    run, tokens, _, protocol = _sample_run(run_dir, draws, weights, device, sampling)
    pixels = torch.from_numpy(decode_images(run.data_header, tokens))
    if pixels.dim() == 3:
        pixels = pixels[..., None].expand(-1, -1, -1, 3)
    record = {**tf_inception_fid(pixels.permute(0, 3, 1, 2) * 2 - 1, ref_stats, inception_weights), **protocol}
    name = f"fid-tf-inception-{draws.sampler_name}-steps{draws.options.steps}-w{draws.options.guidance:g}.json"
    return _write(record, out, run_dir, name)
