"""Equality checks of the CUDA paths (skipped without CUDA; benchmarks/gpu.sh runs them on a GPU):
compiled FlexAttention training layout vs the dense mask (logits and gradients), the packed sampler on
CUDA vs the CPU, bf16 autocast vs fp32, the inductor-compiled packed forward vs eager, the encoder
cache at refresh 1 vs uniform."""

from __future__ import annotations

import pytest
import torch

from partgm.algorithms import get_algorithm
from partgm.models import randomize_
from partgm.models.config import PartitionConfig
from partgm.samplers import SamplingOptions, generate, make_prompt
from partgm.samplers.cached import CachedSampler
from partgm.samplers.partition import CompiledPacked, UniformSampler

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only (benchmarks/gpu.sh)")
V, L = 64, 256


def model_pair(layout: str = "dense", std: float = 0.05):
    algorithm = get_algorithm("pgm", V, V - 1, "loglinear", length=L)
    cfg = PartitionConfig(hidden_size=128, n_heads=2, n_encoder_blocks=2, n_decoder_blocks=2, cond_dim=32,
                          dropout=0.0, attention_layout=layout)
    model = randomize_(algorithm.build_model(cfg), std=std, seed=0)
    return algorithm, model


@pytest.mark.parametrize("layout", ["flex", "padded"])
def test_training_layout_matches_dense_on_cuda(layout):
    x = torch.randint(0, V, (4, L), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    groups = (torch.rand(4, L, device="cuda", generator=torch.Generator("cuda").manual_seed(1)) < 0.3).long()
    groups[1] = 0
    _, ref_model = model_pair("dense", std=0.2)
    _, model = model_pair(layout, std=0.2)
    ref_model.cuda()
    model.cuda()
    ref, out = ref_model(x, groups), model(x, groups)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(ref_model.parameters()))
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=2e-2, rtol=2e-2)


def test_packed_logits_cuda_equal_cpu():
    _, model = model_pair()
    gen = torch.Generator().manual_seed(2)
    tok, pos = torch.randint(0, V, (3, 100), generator=gen), torch.randperm(L, generator=gen)[:100].expand(3, -1)
    q = torch.arange(L)[~torch.isin(torch.arange(L), pos[0])][:16].expand(3, -1)
    with torch.no_grad():
        cpu = model.forward_packed(tok, pos, q)
        cuda = model.cuda().forward_packed(tok.cuda(), pos.cuda(), q.cuda())
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_bf16_logits_close_to_fp32_and_generate_runs():
    algorithm, model = model_pair()
    model.cuda().eval()
    tok = torch.randint(0, V, (2, 64), device="cuda")
    pos = torch.arange(64, device="cuda").expand(2, -1)
    q = torch.arange(64, 80, device="cuda").expand(2, -1)
    with torch.no_grad():
        fp32 = model.forward_packed(tok, pos, q)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model.forward_packed(tok, pos, q).float()
    assert (bf16 - fp32).abs().max() < 0.05 * fp32.abs().max() + 0.05
    out = generate(algorithm, model, make_prompt(2, L, V - 1, device="cuda"), SamplingOptions(steps=8),
                   generator=torch.Generator("cuda").manual_seed(0), precision="bf16")
    assert out.shape == (2, L)


def test_inductor_compiled_packed_forward_equals_eager():
    algorithm, model = model_pair()
    model.cuda().eval()
    compiled = CompiledPacked(bucket=64)
    prompt = make_prompt(2, L, V - 1, device="cuda")
    opts = SamplingOptions(steps=16)
    ref = generate(algorithm, model, prompt, opts, "uniform", torch.Generator("cuda").manual_seed(0), "fp32")
    out = generate(algorithm, model, prompt, opts, UniformSampler(compiled), torch.Generator("cuda").manual_seed(0),
                   "fp32")
    assert compiled.compiles <= L // 64 * 2
    assert (out != ref).float().mean() < 0.02  # kernels differ in rounding: almost every token equal
    bound = compiled.bind(model)
    with torch.no_grad():
        tok = torch.randint(0, V, (2, 70), device="cuda")
        pos = torch.arange(70, device="cuda").expand(2, -1)
        q = torch.arange(70, 86, device="cuda").expand(2, -1)
        torch.testing.assert_close(bound.forward_packed(tok, pos, q), model.forward_packed(tok, pos, q),
                                   atol=1e-3, rtol=1e-3)


def test_cached_refresh_one_equals_uniform_on_cuda():
    algorithm, model = model_pair()
    model.cuda()
    prompt = make_prompt(3, L, V - 1, device="cuda")
    opts = SamplingOptions(steps=32)
    exact = generate(algorithm, model, prompt, opts, "uniform", torch.Generator("cuda").manual_seed(1), "fp32")
    cached = generate(algorithm, model, prompt, opts, CachedSampler(1), torch.Generator("cuda").manual_seed(1), "fp32")
    assert torch.equal(cached, exact)
