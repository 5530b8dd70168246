"""Exact sampling, faster: constants once per ``generate``, the decoder's K/V in one matmul, the
unnormalised float64 draw, ``precision`` and the bucketed ``torch.compile`` of the packed forward."""

from __future__ import annotations

import warnings

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.errors import PartgmError
from partgm.models import randomize_
from partgm.models.config import PartitionConfig
from partgm.samplers import SamplingOptions, generate, make_prompt
from partgm.samplers.common import sample_categorical, sample_tokens, token_probs
from partgm.samplers.partition import CompiledPacked, UniformSampler

pytestmark = pytest.mark.usefixtures("one_thread")
V, L = 50, 40


def tiny(mode: str = "learn+freqs", num_classes: int = 0):
    algorithm = get_algorithm("pgm", V, V - 1, "loglinear", length=L, num_classes=num_classes)
    cfg = PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=2, n_decoder_blocks=3, cond_dim=16,
                          dropout=0.0, swap_query_mode=mode)
    return algorithm, randomize_(algorithm.build_model(cfg), std=0.1, seed=0).eval()


def test_fused_decoder_keys_values_equal_per_block():
    _, model = tiny()
    h = torch.randn(3, 11, 32, generator=torch.Generator().manual_seed(0))
    rope = model.positions.rope(torch.randint(0, L, (3, 11), generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        prepared = model.prepare(3, h.device)
        fused = model.decoder_keys_values(h, rope, prepared.kv_weight)
        single = model.decoder_keys_values(h, rope, None)
    for (k, v), (k1, v1) in zip(fused, single, strict=True):
        torch.testing.assert_close(k, k1, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v1, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["learn+freqs", "learn+freqs+mean"])
def test_packed_path_still_equals_training_path(mode):
    _, model = tiny(mode)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (2, L), generator=gen)
    clean = torch.rand(2, L, generator=gen) < 0.4
    clean[:, 0] = True
    with torch.no_grad():
        full = model(x, (~clean).long())
        for b in range(2):
            cpos = clean[b].nonzero()[:, 0][None]
            qpos = (~clean[b]).nonzero()[:, 0][None]
            packed = model.forward_packed(x[b : b + 1].gather(1, cpos), cpos, qpos)
            torch.testing.assert_close(packed[0], full[b, qpos[0]], atol=1e-5, rtol=1e-4)


def test_conditioning_computed_once_per_generate():
    algorithm, model = tiny()
    calls = []
    model.cond.register_forward_hook(lambda *args: calls.append(1))
    prompt = make_prompt(2, L, V - 1)
    generate(algorithm, model, prompt, SamplingOptions(steps=8), "uniform", torch.Generator().manual_seed(0))
    assert len(calls) == 1
    calls.clear()
    generate(algorithm, model, prompt, SamplingOptions(steps=8), "naive", torch.Generator().manual_seed(0))
    assert len(calls) == 8  # the training-mode path prepares per call


def test_class_conditional_with_guidance_unchanged_by_the_memo():
    algorithm, model = tiny(num_classes=3)
    prompt = make_prompt(2, L, V - 1, labels=[0, 2])
    opts = SamplingOptions(steps=6, guidance=1.5)
    memo = generate(algorithm, model, prompt, opts, "uniform", torch.Generator().manual_seed(3))
    with torch.no_grad():  # the sampler alone: no memo, the conditioning prepared at every call
        plain = UniformSampler().sample(algorithm, model, prompt, opts, torch.Generator().manual_seed(3))
    assert torch.equal(memo, plain)


def test_unnormalised_float64_draw_is_token_identical():
    """The same exponential noise gives the same ids as the float64 softmax draw of before."""
    logits = torch.randn(4000, 300, generator=torch.Generator().manual_seed(0)) * 3
    old = sample_categorical(token_probs(logits), torch.Generator().manual_seed(1))
    new = sample_tokens(logits, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(old, new)


def test_precision_is_checked():
    algorithm, model = tiny()
    with pytest.raises(PartgmError, match="precision"):
        generate(algorithm, model, make_prompt(1, L, V - 1), SamplingOptions(steps=2), precision="fp16")


def test_bf16_on_cpu_runs():
    algorithm, model = tiny()
    out = generate(algorithm, model, make_prompt(2, L, V - 1), SamplingOptions(steps=4), precision="bf16",
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, L)


def test_compiled_packed_forward_bounded_recompiles_and_equal_tokens():
    """Dynamo traces the packed forward once per bucket (the counting backend runs the captured graph
    eagerly, so this checks tracing, guards and padding, not inductor's kernels: benchmarks/gpu.sh
    runs inductor on CUDA)."""
    pytest.importorskip("torch._dynamo")
    algorithm, model = tiny("learn+freqs+mean")
    prompt = make_prompt(3, L, V - 1, [3, 4], {30: 7})
    opts = SamplingOptions(steps=10)
    ref = generate(algorithm, model, prompt, opts, "uniform", torch.Generator().manual_seed(5))
    compiled = CompiledPacked(bucket=16, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = generate(algorithm, model, prompt, opts, UniformSampler(compiled), torch.Generator().manual_seed(5))
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"torch.compile does not work on this build: {type(exc).__name__}: {exc}")
        assert torch.equal(out, ref)
        assert 1 <= compiled.compiles <= -(-L // 16)  # clean widths 16, 32, 48 at most; one query width
        before = compiled.compiles
        again = generate(algorithm, model, prompt, opts, UniformSampler(compiled), torch.Generator().manual_seed(5))
    assert torch.equal(again, ref) and compiled.compiles == before  # no recompiles on a second generation
    with torch.no_grad():  # logits of one padded call equal the eager unpadded call
        pos = torch.arange(1, 12)[None].expand(3, -1)
        q = torch.arange(20, 25)[None].expand(3, -1)
        tok = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(compiled.bind(model).forward_packed(tok, pos, q), model.forward_packed(tok, pos, q),
                                   atol=1e-5, rtol=1e-4)
