"""MaskGIT and PGM-for-images objectives: arccos masking, finite losses, class conditioning."""

from __future__ import annotations

import math

import pytest
import torch

from partgm.algorithms import Batch, get_algorithm
from partgm.algorithms.maskgit import arccos_mask
from partgm.models.config import MaskGITConfig, PartitionConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_arccos_mask_counts():
    g = torch.Generator().manual_seed(0)
    masked = arccos_mask((4000, 64), g, "cpu")
    n = masked.sum(1)
    assert int(n.min()) >= 1 and int(n.max()) <= 64
    assert abs(n.float().mean().item() / 64 - 2 / math.pi) < 0.02  # E[arccos(r) / (pi / 2)] = 2 / pi


@pytest.mark.parametrize(("algo", "network"), [("maskgit", "reference"), ("maskgit", "dit"),
                                               ("pgm-image", "authors"), ("pgm-image", "grid2d")])
def test_image_losses_are_finite_and_train(algo, network):
    algorithm = get_algorithm(algo, 17, None, length=16, num_classes=3, grid=(4, 4))
    cfg = (MaskGITConfig(hidden_size=32, n_heads=2, n_blocks=1, cond_dim=32, dropout=0.0, network=network)
           if algo == "maskgit" else
           PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=1, n_decoder_blocks=1, cond_dim=32,
                           dropout=0.0, image_layout=network))
    torch.manual_seed(0)
    model = algorithm.build_model(cfg)
    x = (torch.arange(16) % 4).expand(8, 16).clone()  # a fixed pattern: learnable in a few steps
    batch = Batch(x, torch.arange(8) % 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = algorithm.training_loss(model, batch, algorithm.draw_times(8, g, "cpu"), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] / 2
    total, count = algorithm.validation_nelbo(model, batch, torch.full((8,), 0.5), g)
    assert math.isfinite(total.item()) and count == 128


def test_maskgit_reference_loss_is_the_mean_over_all_positions(monkeypatch):
    algorithm = get_algorithm("maskgit", 5, None, length=8)
    model = algorithm.build_model(MaskGITConfig(hidden_size=16, n_heads=2, n_blocks=1, dropout=0.0))
    masked = torch.zeros(2, 8, dtype=torch.bool)
    masked[:, :3] = True
    monkeypatch.setattr("partgm.algorithms.maskgit.bernoulli_arccos_mask", lambda shape, g, d: masked)
    x = torch.randint(0, 5, (2, 8))
    loss = algorithm.training_loss(model, Batch(x), torch.rand(2))
    logits = model(torch.where(masked, algorithm.mask_id, x))  # the mask id's logit included, as theirs
    assert logits.shape == (2, 8, 6)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.transpose(1, 2), x))


def test_bernoulli_arccos_mask_rate():
    from partgm.algorithms.maskgit import bernoulli_arccos_mask

    masked = bernoulli_arccos_mask((4000, 64), torch.Generator().manual_seed(0), "cpu")
    assert abs(masked.float().mean().item() - 2 / math.pi) < 0.02
    assert bool((masked.sum(1) == 0).any())  # independent per token: a row may be all clean


def test_maskgit_loss_is_the_mean_over_masked_tokens(monkeypatch):
    algorithm = get_algorithm("maskgit", 5, None, length=8)
    model = algorithm.build_model(MaskGITConfig(hidden_size=16, n_heads=2, n_blocks=1, cond_dim=16, dropout=0.0,
                                                network="dit"))
    masked = torch.zeros(2, 8, dtype=torch.bool)
    masked[:, :3] = True
    monkeypatch.setattr("partgm.algorithms.maskgit.arccos_mask", lambda shape, g, d: masked)
    x = torch.randint(0, 5, (2, 8))
    loss = algorithm.training_loss(model, Batch(x), torch.rand(2))
    nll = torch.nn.functional.cross_entropy(
        algorithm.subs_logits(model, torch.where(masked, algorithm.mask_id, x)).transpose(1, 2), x, reduction="none")
    torch.testing.assert_close(loss, nll[masked].mean())
