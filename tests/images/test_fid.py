"""Frechet distance and Inception Score math; the TF-Inception FID's clear errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from scipy import linalg

from partgm.errors import PartgmError
from partgm.images.fid import (
    feature_statistics,
    fid_record,
    frechet_distance,
    inception_score,
    tf_inception_fid,
)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 2, size=6), rng.uniform(0.1, 2, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_a_direct_computation_on_full_covariances():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    root1 = linalg.sqrtm(sigma1).real  # tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2), a symmetric form
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(
        sigma1 + sigma2 - 2 * linalg.sqrtm(root1 @ sigma2 @ root1).real
    )
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(direct, rel=1e-6)


def test_identical_and_singular_statistics():
    features = np.random.default_rng(2).normal(size=(5, 16))  # N < D: a singular covariance
    mu, sigma = feature_statistics(features)
    assert mu.dtype == np.float64 and sigma.shape == (16, 16)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-4
    assert feature_statistics(torch.tensor(features))[1] == pytest.approx(sigma)
    with pytest.raises(PartgmError, match="mismatched"):
        frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def test_inception_score_extremes():
    assert inception_score(np.full((100, 10), 0.1), splits=10)[0] == pytest.approx(1.0)
    one_hot = np.eye(10)[np.tile(np.arange(10), 10)]  # every split holds each class once
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0)


def test_fid_record_names_the_protocol():
    record = fid_record(
        5.5, feature_extractor="x", resize="299 bicubic", n_samples=50000, reference="imagenet val"
    )
    assert record == {
        "metric": "FID", "value": 5.5, "feature_extractor": "x", "resize": "299 bicubic",
        "n_samples": 50000, "reference": "imagenet val",
    }  # fmt: skip


def test_tf_inception_fid_says_what_is_missing(tmp_path, monkeypatch):
    images = torch.zeros(2, 3, 8, 8)
    stats, weights = tmp_path / "ref.npz", tmp_path / "inception.pth"
    with pytest.raises(PartgmError, match="reference statistics .*ref.npz not found"):
        tf_inception_fid(images, stats, weights)
    np.savez(stats, mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(PartgmError, match="Inception weights .*inception.pth not found"):
        tf_inception_fid(images, stats, weights)
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # as if not installed
    with pytest.raises(PartgmError, match="torch-fidelity"):
        tf_inception_fid(images, stats, weights)


def test_frechet_distance_interval_is_seeded_and_shrinks_with_more_samples():
    from partgm.images.fid import feature_statistics, frechet_distance_ci95

    rng = np.random.default_rng(0)
    mu, sigma = feature_statistics(rng.normal(size=(4000, 4)))
    few, many = rng.normal(0.3, 1.0, size=(100, 4)), rng.normal(0.3, 1.0, size=(3000, 4))
    narrow, wide = frechet_distance_ci95(many, mu, sigma, draws=100), frechet_distance_ci95(few, mu, sigma, draws=100)
    assert 0 < narrow < wide / 2
    assert frechet_distance_ci95(few, mu, sigma, draws=100) == wide  # same seed, same interval
