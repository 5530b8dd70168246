"""The LlamaGen VQ-8 tokenizer: the real layout, and a small model of the same layout round-tripped."""

from __future__ import annotations

import pytest
import torch

from partgm.errors import PartgmError
from partgm.images.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig, load_llamagen_vq

torch.set_num_threads(1)
SMALL = LlamaGenVQConfig(codebook_size=64, codebook_embed_dim=8, ch=32, ch_mult=(1, 1, 2, 2), z_channels=16)

# a sample of the parameter names and shapes of LlamaGen's VQ_8 (tokenizer/tokenizer_image/vq_model.py)
REAL_KEYS = {
    "quantize.embedding.weight": (16384, 8),
    "quant_conv.weight": (8, 256, 1, 1),
    "post_quant_conv.weight": (256, 8, 1, 1),
    "encoder.conv_in.weight": (128, 3, 3, 3),
    "encoder.conv_blocks.1.res.0.nin_shortcut.weight": (256, 128, 1, 1),
    "encoder.conv_blocks.2.downsample.conv.weight": (256, 256, 3, 3),
    "encoder.conv_blocks.3.attn.1.proj_out.weight": (512, 512, 1, 1),
    "encoder.mid.1.q.weight": (512, 512, 1, 1),
    "encoder.norm_out.weight": (512,),
    "encoder.conv_out.weight": (256, 512, 3, 3),
    "decoder.conv_in.weight": (512, 256, 3, 3),
    "decoder.conv_blocks.0.attn.2.norm.weight": (512,),
    "decoder.conv_blocks.0.upsample.conv.weight": (512, 512, 3, 3),
    "decoder.conv_blocks.3.res.2.conv2.weight": (128, 128, 3, 3),
    "decoder.conv_out.weight": (3, 128, 3, 3),
}


def test_default_config_has_the_real_layout():
    with torch.device("meta"):  # no memory, no compute
        model = LlamaGenVQ()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert model.config.downsample == 8
    assert {k: shapes.get(k) for k in REAL_KEYS} == REAL_KEYS
    assert "decoder.conv_blocks.3.upsample.conv.weight" not in shapes
    assert 69e6 < sum(v.numel() for v in model.parameters()) < 71e6


def _save(tmp_path, state, name="vq.pt"):
    path = tmp_path / name
    torch.save({"model": state, "steps": 10}, path)
    return path


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LlamaGenVQ(SMALL)
    state = dict(model.state_dict(), **{"quantize.codebook_used": torch.zeros(65536)})  # as LlamaGen saves
    loaded = load_llamagen_vq(_save(tmp_path, state), SMALL)
    assert not loaded.training
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = loaded.encode(images)
    assert codes.shape == (2, 4, 4) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 64
    assert torch.equal(codes, model.eval().encode(images))
    decoded = loaded.decode(codes)
    assert decoded.shape == (2, 3, 32, 32) and decoded.min() >= -1 and decoded.max() <= 1
    assert torch.equal(loaded.encode(decoded), loaded.encode(decoded.clone()))
    assert torch.equal(loaded.decode(torch.full((1, 2, 2), 64)), loaded.decode(torch.full((1, 2, 2), 63)))


def test_checkpoint_errors(tmp_path):
    state = LlamaGenVQ(SMALL).state_dict()
    with pytest.raises(PartgmError, match="does not exist"):
        load_llamagen_vq(tmp_path / "none.pt", SMALL)
    missing = {k: v for k, v in state.items() if k != "encoder.conv_in.weight"}
    with pytest.raises(PartgmError, match=r"missing \['encoder.conv_in.weight'\], unexpected \[\]"):
        load_llamagen_vq(_save(tmp_path, missing), SMALL)
    with pytest.raises(PartgmError, match=r"unexpected \['extra.weight'\]"):
        load_llamagen_vq(_save(tmp_path, dict(state, **{"extra.weight": torch.zeros(1)})), SMALL)
    with pytest.raises(PartgmError, match=r"codebook .* is \[64, 8\], expected \[16384, 8\]"):
        load_llamagen_vq(_save(tmp_path, state), LlamaGenVQConfig())
    with pytest.raises(PartgmError, match="'encoder.conv_in.weight' is missing"):
        load_llamagen_vq(_save(tmp_path, missing))  # the architecture is read from the state dict
    torch.save({"state_dict": state}, tmp_path / "other.pt")
    with pytest.raises(PartgmError, match="no 'model' state dict"):
        load_llamagen_vq(tmp_path / "other.pt", SMALL)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(PartgmError, match="cannot read"):
        load_llamagen_vq(tmp_path / "junk.pt", SMALL)


def test_architecture_is_read_from_the_state_dict(tmp_path):
    """VQ-16's five levels (ch_mult 1, 1, 2, 2, 4: four halvings) load without naming a config, as VQ-8's."""
    from partgm.images.llamagen_vq import config_from_state

    vq16 = LlamaGenVQConfig(codebook_size=64, codebook_embed_dim=8, ch=32, ch_mult=(1, 1, 2, 2, 4), z_channels=16)
    for cfg in (SMALL, vq16):
        model = LlamaGenVQ(cfg)
        assert config_from_state(model.state_dict()) == cfg
        loaded = load_llamagen_vq(_save(tmp_path, model.state_dict(), f"{len(cfg.ch_mult)}.pt"))
        assert loaded.config.downsample == 2 ** (len(cfg.ch_mult) - 1)
    assert load_llamagen_vq(_save(tmp_path, LlamaGenVQ(vq16).state_dict())).encode(
        torch.zeros(1, 3, 32, 32)).shape == (1, 2, 2)
