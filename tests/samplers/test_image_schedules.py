"""The authors' image-sampler numbers, checked against values worked out by hand from their formulas
(jdeschena/pgm ``image_pretrain`` sampler/*.py, valeoai/Halton-MaskGIT). ``1 - arccos(x) / (pi / 2)``
equals ``asin(x) / (pi / 2)``, which is how the numbers below were worked out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from partgm.algorithms.base import Algorithm, TokenSpace
from partgm.errors import PartgmError
from partgm.samplers import SamplingOptions, generate, get_sampler, make_prompt
from partgm.samplers.image_schedules import (
    ImageSampling,
    confidence_revealed,
    guidance_weight,
    halton_revealed,
    step_counts,
)
from partgm.samplers.images import image_sampler

pytestmark = pytest.mark.usefixtures("one_thread")


def test_halton_counts_per_step():
    # S = 32, N = 1024: step 0 reveals int(1024 * asin(1/32) / (pi/2)) = int(20.38) = 20 tokens.
    counts = step_counts(halton_revealed(32, 1024))
    assert counts[:4] == [20, 20, 21, 20] and sum(counts) == 1024
    assert halton_revealed(32, 1024)[-3:] == [792, 860, 1024]
    # S = 8, N = 64: int(64 * asin(k/8) / (pi/2)) for k = 1..8 = 5, 10, 15, 21, 27, 34, 43, 64.
    assert step_counts(halton_revealed(8, 64)) == [5, 5, 5, 6, 6, 7, 9, 21]
    # max(k + 1, ...) when there are few tokens: every step reveals at least one while they last.
    assert step_counts(halton_revealed(5, 3)) == [1, 1, 1, 0, 0]


def test_confidence_counts_per_step():
    # sche = int(N * asin(k / (S - 1)) / (pi/2)); S = 8, N = 64: 0, 5, 11, 18, 24, 32, 41, 64.
    # PGM: step 0 reveals 1, then sche[k] - sche[k-1], the last step the rest (64 - 1 - 41 = 22).
    assert step_counts(confidence_revealed(8, 64, "pgm-image")) == [1, 5, 6, 7, 6, 8, 9, 22]
    # MaskGIT: max(sche[k], k + 1) revealed after step k.
    assert step_counts(confidence_revealed(8, 64, "maskgit")) == [1, 4, 6, 7, 6, 8, 9, 23]
    # S = 32, N = 1024 (the paper's): 1, then 21 = int(1024 * asin(1/31) / (pi/2)), 21, 21, ..., last 166.
    counts = step_counts(confidence_revealed(32, 1024, "pgm-image"))
    assert counts[:4] == [1, 21, 21, 21] and counts[-1] == 1024 - 1 - 857 and sum(counts) == 1024


def test_logit_multipliers_and_guidance_ramp():
    # Their default: sm_temp 1 and temp_warmup 1: step 0 draws from softmax(logits * 0.5).
    default = ImageSampling()
    assert [default.logit_scale(k, 4) for k in range(4)] == [0.5, 1.0, 1.0, 1.0]
    ramp = ImageSampling(sm_temp_min=0.5, sm_temp_max=1.0, temp_warmup=1)
    assert [ramp.logit_scale(k, 3) for k in range(3)] == [0.25, 0.75, 1.0]
    squared = ImageSampling(sm_temp_min=0.5, sm_temp_max=1.0, temp_pow=2.0, temp_warmup=0)
    assert [squared.logit_scale(k, 3) for k in range(3)] == [0.25, 0.5625, 1.0]
    # Guidance w * k / (S - 1): 0 at the first step, w at the last; their MaskGIT Halton: constant.
    assert [guidance_weight(2.0, k, 5, ramp=True) for k in range(5)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [guidance_weight(2.0, k, 5, ramp=False) for k in range(5)] == [2.0] * 5
    assert default.gumbel_scale("partition") == 5.0 and default.gumbel_scale("masked") == 4.5
    assert ImageSampling(r_temp=3.0).gumbel_scale("partition") == 3.0
    with pytest.raises(PartgmError, match="top_k"):
        ImageSampling(top_k=0)


class Fixed(Algorithm):
    """Two ids with logits (0, log 3) at every queried position; records the guidance of each step."""

    name = "fixed"

    def __init__(self, family: str, length: int = 1024):
        super().__init__(TokenSpace(vocab_size=2, length=length, grid=(32, length // 32), num_classes=2))
        self.sampler_family = family

    def logits(self, model, context, query_positions):
        return torch.tensor([1.0, 3.0]).log().expand(*query_positions.shape, 2).clone()


def test_first_halton_step_draws_from_half_the_logits():
    """One step reveals everything at softmax(logits * 0.5): p(id 1) = sqrt(3) / (1 + sqrt(3)) = 0.634
    (the halved temperature of partgm's earlier sampler gave 9 / 10, the plain softmax 3 / 4)."""
    algorithm = Fixed("partition")
    out = generate(algorithm, nn.Identity(), make_prompt(4, 1024, None), SamplingOptions(steps=1), "halton",
                   torch.Generator().manual_seed(0))
    assert abs(out.float().mean().item() - 3**0.5 / (1 + 3**0.5)) < 0.02


@pytest.mark.parametrize(("family", "name", "expected"), [
    ("partition", "halton", [0.0, 1.0, 2.0, 3.0]), ("partition", "confidence", [0.0, 1.0, 2.0, 3.0]),
    ("masked", "confidence", [0.0, 1.0, 2.0, 3.0]), ("masked", "halton", [3.0] * 4),
])
def test_samplers_use_the_authors_guidance_ramp(monkeypatch, family, name, expected):
    from partgm.samplers import images

    seen = []
    real = images.denoiser_logits

    def spy(algorithm, model, context, query, options, fraction=1.0):
        seen.append(options.guidance)
        return real(algorithm, model, context, query, options, fraction)

    monkeypatch.setattr(images, "denoiser_logits", spy)
    prompt = make_prompt(2, 1024, None, labels=[0, 1])
    generate(Fixed(family), nn.Identity(), prompt, SamplingOptions(steps=4, guidance=3.0), name,
             torch.Generator().manual_seed(0))
    assert seen == expected


def test_randomized_halton_order_is_a_roll_per_sample():
    algorithm = Fixed("partition", length=64)
    algorithm.space = TokenSpace(vocab_size=2, length=64, grid=(8, 8), num_classes=2)
    prompt = make_prompt(5, 64, None)
    base = get_sampler(algorithm, "halton").order(algorithm, prompt)[0]
    rolled = image_sampler(algorithm, "halton", ImageSampling(randomize=True)).order(
        algorithm, prompt, torch.Generator().manual_seed(3))
    shifts = []
    for row in rolled:
        match = [s for s in range(64) if torch.equal(row, torch.roll(base, s))]
        assert len(match) == 1
        shifts.append(match[0])
    assert len(set(shifts)) > 1


def test_top_k_keeps_the_likeliest_ids():
    algorithm = Fixed("masked")
    sampler = image_sampler(algorithm, "halton", ImageSampling(top_k=1))
    out = generate(algorithm, nn.Identity(), make_prompt(2, 1024, None), SamplingOptions(steps=3), sampler,
                   torch.Generator().manual_seed(0))
    assert bool((out == 1).all())
