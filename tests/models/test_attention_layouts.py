"""The Partition Transformer's training-mode attention layouts (``PartitionConfig.attention_layout``):
every layout gives the dense-mask logits and gradients; the sync-free ones (flex, padded) never read a
value on the host (checked under FakeTensorMode, where any host read raises)."""

from __future__ import annotations

import warnings

import pytest
import torch

from partgm.algorithms import Batch, get_algorithm
from partgm.models.config import PartitionConfig
from partgm.models.group_attention import flex_available

pytestmark = pytest.mark.usefixtures("one_thread")
B, L, V = 4, 24, 20


def tiny(layout: str, seed: int = 0):
    algorithm = get_algorithm("pgm", V, None, "loglinear", length=L)
    cfg = PartitionConfig(hidden_size=32, n_heads=2, n_encoder_blocks=1, n_decoder_blocks=2, cond_dim=16,
                          dropout=0.0, attention_layout=layout, swap_query_mode="learn+freqs+mean")
    torch.manual_seed(seed)
    model = algorithm.build_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # no zero-initialised layers: every gradient is informative
    return algorithm, model


def groups_with_edge_cases() -> torch.Tensor:
    groups = torch.randint(0, 2, (B, L), generator=torch.Generator().manual_seed(1))
    groups[1] = 0  # the other group is empty for every query of this row
    groups[2, :] = 1
    groups[2, 5] = 0
    return groups


def inputs():
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2)), groups_with_edge_cases()


@pytest.mark.parametrize("layout", ["blocks", "padded"])
def test_layout_gradients_equal_dense(layout):
    x, groups = inputs()
    _, ref_model = tiny("dense")
    _, model = tiny(layout)
    ref = ref_model(x, groups)
    out = model(x, groups)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(ref_model.parameters()))
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not flex_available(), reason="no flex_attention in this torch")
def test_flex_layout_logits_equal_dense():
    """FlexAttention on CPU runs the forward only (torch raises on its backward), so gradients of the
    flex path are checked on a GPU by benchmarks/gpu.sh (tests/models/test_attention_layouts.py there)."""
    x, groups = inputs()
    _, ref_model = tiny("dense")
    _, model = tiny("flex")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(model(x, groups), ref_model(x, groups), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only (run by benchmarks/gpu.sh)")
def test_flex_layout_gradients_equal_dense_on_cuda():
    x, groups = (t.cuda() for t in inputs())
    _, ref_model = tiny("dense")
    _, model = tiny("flex")
    ref_model.cuda()
    model.cuda()
    ref = ref_model(x, groups)
    out = model(x, groups)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(ref_model.parameters()))
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-3, rtol=1e-3)


def test_auto_layout_choice():
    from torch._subclasses.fake_tensor import FakeTensorMode

    _, model = tiny("auto")
    assert model.layout_for(torch.zeros(1, 512, dtype=torch.long)) == "blocks"  # CPU default unchanged
    assert model.layout_for(torch.zeros(1, 64, dtype=torch.long)) == "dense"
    with FakeTensorMode():
        on_cuda = torch.zeros(1, 64, dtype=torch.long, device="cuda")
        assert model.layout_for(on_cuda) == ("flex" if flex_available() else "dense")


@pytest.mark.parametrize("layout", ["padded", "dense", "flex"])
def test_training_step_has_no_host_sync(layout):
    """The model part of a PGM training step (loss and, where CPU allows, backward) on fake tensors:
    a ``.tolist()`` / ``.item()`` / ``bool(tensor)`` anywhere would raise DataDependentOutputException."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if layout == "flex" and not flex_available():
        pytest.skip("no flex_attention in this torch")
    algorithm, model = tiny(layout)
    with FakeTensorMode(allow_non_fake_inputs=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = torch.randint(0, V, (B, L))
        t = torch.rand(B)
        if layout == "flex":  # CPU FlexAttention: forward only
            with torch.no_grad():
                assert algorithm.training_loss(model, Batch(x), t).shape == ()
            return
        algorithm.training_loss(model, Batch(x), t).backward()


def test_the_group_blocks_layout_does_sync():
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    algorithm, model = tiny("blocks")
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(DataDependentOutputException):
        algorithm.training_loss(model, Batch(torch.randint(0, V, (B, L))), torch.rand(B))
