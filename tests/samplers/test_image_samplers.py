"""Image samplers: every position decoded exactly once on the arccos schedule, Halton order, guidance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from partgm.algorithms import ALGORITHMS, get_algorithm
from partgm.algorithms.base import Algorithm, TokenSpace
from partgm.images.halton import halton_order
from partgm.models import randomize_
from partgm.models.config import DiTConfig, PartitionConfig
from partgm.samplers import SamplingOptions, generate, get_sampler, make_prompt, sampler_names
from partgm.samplers.common import denoiser_logits
from partgm.samplers.image_schedules import confidence_revealed, halton_revealed, step_counts

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_SAMPLERS = [(family, name) for family in ("masked", "partition") for name in ("confidence", "halton")]


class StepStamp(Algorithm):
    """A denoiser whose logits put all mass on id ``1 + call number``: the final tokens record the step at
    which each position was decoded. It also checks that no clean position is ever queried."""

    name = "step-stamp"

    def __init__(self, space: TokenSpace, family: str):
        super().__init__(space)
        self.sampler_family = family  # declares no samplers: every sampler of the family
        self.calls = 0

    def logits(self, model, context, query_positions):
        queried_clean = context.clean.gather(1, query_positions)
        self.queried_clean = getattr(self, "queried_clean", 0) + int(queried_clean.sum())
        self.calls += 1
        out = torch.full((*query_positions.shape, self.vocab_size), -1e9)
        out[..., self.calls] = 0.0
        return out


@pytest.mark.parametrize(("family", "name"), IMAGE_SAMPLERS)
@pytest.mark.parametrize("steps", [1, 5, 64, 100])
def test_every_position_decoded_once_on_the_arccos_schedule(family, name, steps):
    space = TokenSpace(vocab_size=128, length=64, grid=(8, 8))
    algorithm = StepStamp(space, family)
    prompt = make_prompt(3, 64, None)
    out = generate(algorithm, nn.Identity(), prompt, SamplingOptions(steps=steps), name, torch.Generator().manual_seed(0))
    assert bool((out > 0).all())  # every position decoded
    if name == "halton":
        revealed = halton_revealed(steps, 64)
    else:
        revealed = confidence_revealed(steps, 64, "pgm-image" if family in ("partition", "pgm-image") else "maskgit")
    counts = [n for n in step_counts(revealed) if n]
    for row in out:  # decoded once: each step decoded exactly its share
        assert torch.bincount(row, minlength=len(counts) + 1)[1:].tolist() == counts
    if name == "halton" or family == "partition":
        assert algorithm.queried_clean == 0


@pytest.mark.parametrize(("family", "name"), IMAGE_SAMPLERS)
def test_fixed_positions_are_kept_and_rows_may_differ(family, name):
    algorithm = StepStamp(TokenSpace(vocab_size=64, length=16, grid=(4, 4)), family)
    prompt = make_prompt(2, 16, None, fixed={3: 0, 7: 0})
    prompt.fixed[1, 9] = True  # row 1 has one more fixed position
    out = generate(algorithm, nn.Identity(), prompt, SamplingOptions(steps=4), name, torch.Generator().manual_seed(0))
    assert bool((out[prompt.fixed] == 0).all()) and bool((out[~prompt.fixed] > 0).all())


def test_halton_sampler_follows_the_halton_order():
    algorithm = StepStamp(TokenSpace(vocab_size=128, length=64, grid=(8, 8)), "masked")
    out = generate(algorithm, nn.Identity(), make_prompt(1, 64, None), SamplingOptions(steps=64), "halton")
    assert out[0, halton_order(8, 8)].tolist() == list(range(1, 65))


def test_default_samplers_are_declared_by_the_algorithm():
    def names(algo: str) -> list[str]:
        return sampler_names(ALGORITHMS.get(algo))

    assert names("maskgit")[0] == "confidence" and names("pgm-image")[0] == "halton"
    assert names("mdlm")[0] == "ancestral" and names("pgm")[0] == "uniform" and names("ar") == ["ancestral"]
    assert {"ancestral", "fast-ancestral"} <= set(names("maskgit"))
    assert {"uniform", "binomial", "naive"} <= set(names("pgm-image")) and "cached" not in names("pgm-image")
    for algo in ALGORITHMS.names():  # every declared sampler exists in the algorithm's family
        assert all(get_sampler(ALGORITHMS.get(algo), name).name == name for name in names(algo)), algo


def _tiny(algo: str):
    space = {"num_classes": 3, "grid": (4, 4)}
    algorithm = get_algorithm(algo, 8, None, length=16, **space)
    if issubclass(algorithm.model_config, DiTConfig):
        cfg = algorithm.model_config(hidden_size=32, n_heads=2, n_blocks=1, cond_dim=32, dropout=0.0)
    else:
        cfg = PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=1, n_decoder_blocks=1, cond_dim=32,
                              dropout=0.0)
    # random weights everywhere: the zero-initialised output layer would make every class alike
    model = randomize_(algorithm.build_model(cfg), std=0.1)
    with torch.no_grad():  # strong classes, so that a label visibly changes the samples
        table = model.cls_emb if hasattr(model, "cls_emb") else model.cond.class_embedding
        table.weight.mul_(50)
    return algorithm, model.eval()


@pytest.mark.parametrize("algo", ["maskgit", "pgm-image", "mdlm", "pgm"])
@pytest.mark.parametrize("name", ["confidence", "halton"])
def test_guidance_zero_is_the_unguided_sampler_and_labels_matter(algo, name):
    algorithm, model = _tiny(algo)

    def draw(labels, **options):
        prompt = make_prompt(4, 16, None, labels=labels)
        return generate(algorithm, model, prompt, SamplingOptions(steps=6, **options), name,
                        torch.Generator().manual_seed(1))

    plain = draw([0, 0, 0, 0])
    assert torch.equal(draw([0, 0, 0, 0], guidance=0.0, guidance_schedule="linear"), plain)
    assert not torch.equal(draw([2, 2, 2, 2]), plain)
    assert not torch.equal(draw([0, 0, 0, 0], guidance=3.0), plain)


@pytest.mark.parametrize("algo", ["maskgit", "pgm-image"])
def test_guided_logits_combine_conditional_and_null_class(algo):
    from partgm.algorithms.base import Context

    algorithm, model = _tiny(algo)
    tokens = torch.randint(0, 8, (2, 16), generator=torch.Generator().manual_seed(0))
    clean = torch.zeros(2, 16, dtype=torch.bool)
    clean[:, :5] = True
    query = torch.arange(5, 16).expand(2, -1)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        guided = denoiser_logits(algorithm, model, Context(tokens, clean, labels), query, SamplingOptions(guidance=2.0))
        cond = algorithm.logits(model, Context(tokens, clean, labels), query).float()
        uncond = algorithm.logits(model, Context(tokens, clean, algorithm.null_labels(2, "cpu")), query).float()
    torch.testing.assert_close(guided, 3.0 * cond - 2.0 * uncond, rtol=1e-4, atol=1e-4)


def test_unknown_sampler_for_maskgit_names_the_choices():
    from partgm.errors import PartgmError

    algorithm, _ = _tiny("maskgit")
    with pytest.raises(PartgmError, match="confidence"):
        get_sampler(algorithm, "uniform")
