"""The reference MaskGIT network, the image recipe (shipped config, cosine-tail schedule) and the paper's
image presets (parameter counts on the meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import partgm
from partgm.algorithms import get_algorithm
from partgm.config import TrainConfig, to_dict
from partgm.engine.optim import lr_factor
from partgm.models import randomize_
from partgm.models.config import MaskGITConfig
from partgm.models.maskgit import swiglu_width
from partgm.resolve import config_from_dict, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")
RECIPE = Path(partgm.__file__).parent / "configs" / "images-authors.yaml"


@pytest.mark.parametrize(("algo", "preset", "paper_millions"), [
    ("maskgit", "maskgit-large", 480), ("pgm-image", "pgm-image-12-12", 494), ("pgm-image", "pgm-image-14-10", 494),
])
def test_paper_image_presets(algo, preset, paper_millions):
    cfg = resolve_config(RECIPE, overrides=[f"algo={algo}", f"preset={preset}"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.warmup_steps) == (1e-4, 0.03, 2500)
    assert cfg.train.lr_schedule == "cosine-tail" and cfg.train.ema_decay == 0.0
    algorithm = get_algorithm(algo, 16384, None, length=1024, num_classes=1000, grid=(32, 32))
    with torch.device("meta"):
        model = algorithm.build_model(cfg.model)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(millions - paper_millions) / paper_millions < 0.03, millions


def test_cosine_tail_schedule():
    tc = TrainConfig(steps=1000, warmup_steps=100, lr_schedule="cosine-tail")
    assert lr_factor(49, tc) == 0.5 and lr_factor(100, tc) == 1.0 and lr_factor(900, tc) == 1.0
    assert lr_factor(950, tc) == pytest.approx(0.5)  # halfway through the last 10%: 0.5 (1 + cos(pi / 2))
    assert lr_factor(1000, tc) == 0.01  # max(0, 0.01)


def test_reference_maskgit_network():
    assert swiglu_width(4096) == 2816 and swiglu_width(128) == 256  # int(2/3 of 4H) up to a multiple of 256
    algorithm = get_algorithm("maskgit", 9, None, length=16, num_classes=3, grid=(4, 4))
    model = randomize_(algorithm.build_model(MaskGITConfig(hidden_size=32, n_heads=2, n_blocks=2, dropout=0.0)),
                       std=0.1, seed=0).eval()
    names = {name for name, _ in model.named_parameters()}
    assert {"tok_emb.weight", "pos_emb.weight", "cls_emb.weight", "reg_tokens.weight", "head_bias",
            "transformer.layers.0.attn.wq.weight", "transformer.layers.1.ff.w3.weight",
            "last_norm.norm_final.bias", "last_norm.mlp.1.weight"} <= names
    x = torch.randint(0, 10, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(x, labels=torch.tensor([0, 2]))
        assert logits.shape == (2, 16, 10)
        # tied head: changing the token table changes the output projection
        idx = torch.tensor([[3, 7], [0, 15]])
        torch.testing.assert_close(model(x, output_index=idx, labels=torch.tensor([0, 2])),
                                   logits.gather(1, idx[..., None].expand(-1, -1, 10)))
        # absolute positions: a permutation of the input does not permute the output
        assert not torch.allclose(model(x.flip(1), labels=torch.tensor([0, 2])).flip(1), logits, atol=1e-4)


def test_runs_saved_before_the_new_layouts_rebuild_their_networks():
    for algo, field, old in (("maskgit", "network", "dit"), ("pgm-image", "image_layout", "grid2d")):
        data = to_dict(resolve_config(overrides=[f"algo={algo}"]))
        del data["model"][field]
        assert getattr(config_from_dict(data).model, field) == old
