"""Frechet distance, Inception Score and the TF-Inception FID (spec sections 5 and 7).

The statistics code is extractor-agnostic; ``tf_inception_fid`` uses the optional ``torch-fidelity``
package (its TF-FID Inception port, weights from a local file) and never downloads anything.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from partgm.errors import PartgmError


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """features ``[N, D]`` -> (mean ``[D]``, covariance ``[D, D]``), float64, unbiased (N - 1)."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    x = x.astype(np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise PartgmError(f"feature statistics need features [N >= 2, D], got shape {list(x.shape)}")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``.

    As in the reference FID code, a singular product is retried with ``eps`` added to both diagonals,
    and a numerically imaginary square root (imaginary diagonal below 1e-3) keeps its real part."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise PartgmError(
            f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    with warnings.catch_warnings():  # a singular product is expected (N < D, dead features) and handled
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.abs(np.diagonal(covmean).imag).max()
        if imaginary > 1e-3:
            raise PartgmError(
                f"Frechet distance: the covariance square root has imaginary part {imaginary:.3g}"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_ci95(
    features: np.ndarray | torch.Tensor, mu_ref: np.ndarray, sigma_ref: np.ndarray, draws: int = 200, seed: int = 0
) -> float:
    """The sampling noise of a Frechet distance: half the 2.5-97.5% range of the distance over ``draws``
    bootstrap resamples of the generated ``features`` [N, D] against fixed reference statistics. It says
    how much N other samples of the same model would move the figure, not how much another training
    run would."""
    x = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    rng = np.random.default_rng(seed)
    boot = [frechet_distance(*feature_statistics(x[rng.integers(0, len(x), len(x))]), mu_ref, sigma_ref)
            for _ in range(draws)]
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(high - low) / 2


def inception_score(probs: np.ndarray | torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score of class probabilities ``[N, C]``: ``exp(E_x KL(p(y|x) || p(y)))`` on each of
    ``splits`` consecutive chunks, p(y) the chunk's mean; returns (mean, std) over the chunks."""
    p = (probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)).astype(
        np.float64
    )
    if p.ndim != 2 or len(p) < splits:
        raise PartgmError(
            f"inception score needs probabilities [N >= splits={splits}, C], got {list(p.shape)}"
        )
    scores = []
    for chunk in np.array_split(p, splits):
        kl = np.where(chunk > 0, chunk * (np.log(np.maximum(chunk, 1e-30)) - np.log(chunk.mean(0))), 0.0)
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


class FIDRecord(TypedDict):
    metric: str
    value: float
    feature_extractor: str
    resize: str
    n_samples: int
    reference: str


def fid_record(
    value: float, *, feature_extractor: str, resize: str, n_samples: int, reference: str, metric: str = "FID"
) -> FIDRecord:
    """A self-describing FID result: which features, which resize, how many samples, against what.
    FIDs computed under different protocols are not comparable."""
    return FIDRecord(
        metric=metric,
        value=float(value),
        feature_extractor=feature_extractor,
        resize=resize,
        n_samples=int(n_samples),
        reference=reference,
    )


def tf_inception_fid(
    images: torch.Tensor, ref_stats_path: str | Path, weights_path: str | Path, batch_size: int = 50
) -> FIDRecord:
    """ImageNet-protocol FID of ``images`` ``[N, 3, H, W]`` in [-1, 1] against reference statistics.

    Features: the 2048-d pool features of torch-fidelity's TF-FID Inception-v3 port, weights read from
    ``weights_path`` (``weights-inception-2015-12-05-6726825d.pth``); the extractor resizes to 299x299
    itself (TF1-compatible bilinear). ``ref_stats_path``: an ``.npz`` with ``mu`` and ``sigma`` (e.g. the
    ADM ImageNet reference batch)."""
    ref_stats_path, weights_path = Path(ref_stats_path), Path(weights_path)
    if not ref_stats_path.is_file():
        raise PartgmError(f"FID reference statistics {ref_stats_path} not found (an .npz with mu and sigma)")
    if not weights_path.is_file():
        raise PartgmError(
            f"Inception weights {weights_path} not found (torch-fidelity's TF-FID Inception .pth)"
        )
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise PartgmError(
            "TF-Inception FID needs the optional package torch-fidelity: pip install torch-fidelity"
        ) from None
    try:
        with np.load(ref_stats_path) as ref:
            mu_ref, sigma_ref = ref["mu"], ref["sigma"]
    except (KeyError, OSError, ValueError) as e:
        raise PartgmError(f"cannot read mu and sigma from {ref_stats_path}: {e}") from None
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_path)
    ).eval()
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    with torch.no_grad():
        feats = torch.cat([extractor(batch)[0].double().cpu() for batch in pixels.split(batch_size)])
    mu, sigma = feature_statistics(feats)
    value = frechet_distance(mu, sigma, mu_ref, sigma_ref)
    return fid_record(
        value,
        feature_extractor="torch-fidelity inception-v3-compat pool 2048",
        resize="299 TF1 bilinear",
        n_samples=len(images),
        reference=str(ref_stats_path),
    )
