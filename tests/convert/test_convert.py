"""Reference checkpoint converter: tiny PGM / MDLM checkpoints in the reference layout give models with
bit-identical logits; EMA weights are matched through the reference parameter order; clear errors.

The reference layout is rebuilt here independently of partgm's modules: skeleton ``nn.Module``s with
the reference attribute names, registered in the reference order (spec section 8 and the reference
module structure), so their ``parameters()`` order is the one the released ``ema.shadow_params`` use.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from partgm.algorithms import get_algorithm
from partgm.cli import main
from partgm.convert import convert_checkpoint, reference_parameter_names
from partgm.errors import PartgmError
from partgm.resolve import resolve_config
from partgm.run.checkpoint import load_run

HIDDEN, HEADS, COND, VOCAB_ROWS, LENGTH = 32, 2, 16, 40, 16  # 39 real tokens + [MASK]
N_REAL = VOCAB_ROWS - 1


# --- the reference layout ------------------------------------------------------------------------------------


class RefLayerNorm(nn.Module):  # weight only, like the reference's LayerNorm
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


def ref_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))


class RefDDiTBlock(nn.Module):
    def __init__(self, dim: int, cond: int):
        super().__init__()
        self.norm1 = RefLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(0.1)
        self.norm2 = RefLayerNorm(dim)
        self.mlp = ref_mlp(dim)
        self.dropout2 = nn.Dropout(0.1)
        self.adaLN_modulation = nn.Linear(cond, 6 * dim)


class RefCrossBlock(nn.Module):
    def __init__(self, dim: int, cond: int):
        super().__init__()
        self.q_norm1 = RefLayerNorm(dim)
        self.kv_norm1 = RefLayerNorm(dim)
        self.norm2 = RefLayerNorm(dim)
        self.attn_q = nn.Linear(dim, dim, bias=False)
        self.attn_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.mlp = ref_mlp(dim)
        self.adaLN_modulation = nn.Linear(cond, 6 * dim)


class RefGroupSwap(nn.Module):
    def __init__(self, dim: int, mlp4: bool = False):
        super().__init__()
        self.pre_query_norm = nn.LayerNorm(dim)
        self.base_embedding = nn.Embedding(1, dim).weight
        self.query_processor = (
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, dim))
            if mlp4
            else nn.Linear(dim, dim)
        )
        self.hidden_to_key_value = nn.Linear(dim, 2 * dim)
        self.output_linear = nn.Linear(dim, dim)


class RefEmbedding(nn.Module):
    def __init__(self, dim: int, rows: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(rows, dim))


class RefTimestep(nn.Module):
    def __init__(self, cond: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, cond), nn.SiLU(), nn.Linear(cond, cond))


class RefRotary(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)))


class RefFinal(nn.Module):
    def __init__(self, dim: int, rows: int, cond: int):
        super().__init__()
        self.norm_final = RefLayerNorm(dim)
        self.linear = nn.Linear(dim, rows)
        self.adaLN_modulation = nn.Linear(cond, 2 * dim)


class RefEncoder(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(RefDDiTBlock(HIDDEN, COND) for _ in range(n))


class RefDecoder(nn.Module):
    def __init__(self, n: int, mlp4: bool = False):
        super().__init__()
        self.group_swap = RefGroupSwap(HIDDEN, mlp4)
        self.layers = nn.ModuleList(RefCrossBlock(HIDDEN, COND) for _ in range(n))


class RefPartitionDIT(nn.Module):
    def __init__(self, n_enc: int, n_dec: int, mlp4: bool = False):
        super().__init__()
        self.vocab_embed = RefEmbedding(HIDDEN, VOCAB_ROWS)
        self.rotary_emb = RefRotary(HIDDEN // HEADS)
        self.sigma_map = RefTimestep(COND)
        self.encoder = RefEncoder(n_enc)
        self.decoder = RefDecoder(n_dec, mlp4)
        self.output_layer = RefFinal(HIDDEN, VOCAB_ROWS, COND)


class RefDIT(nn.Module):
    def __init__(self, n_blocks: int):
        super().__init__()
        self.vocab_embed = RefEmbedding(HIDDEN, VOCAB_ROWS)
        self.sigma_map = RefTimestep(COND)
        self.rotary_emb = RefRotary(HIDDEN // HEADS)
        self.blocks = nn.ModuleList(RefDDiTBlock(HIDDEN, COND) for _ in range(n_blocks))
        self.output_layer = RefFinal(HIDDEN, VOCAB_ROWS, COND)


def ours_to_reference(name: str) -> str:
    """The documented name correspondences, applied backwards (ours -> reference)."""
    name = name.replace("cond.sigma_map.", "sigma_map.")
    name = name.replace(".mlp.fc.", ".mlp.0.").replace(".mlp.proj.", ".mlp.2.")
    name = name.replace(".adaLN_modulation.linear.", ".adaLN_modulation.")
    name = re.sub(r"^encoder\.(\d+)\.", r"encoder.blocks.\1.", name)
    name = re.sub(r"^decoder\.(\d+)\.", r"decoder.layers.\1.", name)
    return re.sub(r"^group_swap\.", "decoder.group_swap.", name)


# --- building tiny checkpoints --------------------------------------------------------------------------------


def tiny_cfg(algo: str, mode: str = "learn+freqs", projection: str = "linear"):
    return resolve_config(
        overrides=[
            f"algo={algo}",
            f"model.hidden_size={HIDDEN}",
            f"model.n_heads={HEADS}",
            f"model.cond_dim={COND}",
            "model.dropout=0.0",
            *(["model.n_encoder_blocks=2", "model.n_decoder_blocks=2", f"model.swap_query_mode={mode}",
               f"model.swap_projection={projection}"]
              if algo == "pgm" else ["model.n_blocks=2"]),
            f"data.length={LENGTH}",
        ]
    )


def random_model(algo: str, seed: int, mode: str = "learn+freqs", projection: str = "linear") -> nn.Module:
    torch.manual_seed(seed)
    model = get_algorithm(algo, N_REAL, N_REAL - 1).build_model(tiny_cfg(algo, mode, projection).model)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised layers too: nothing may be silently skipped
            p.normal_(0.0, 0.2)
    return model.eval()


def reference_skeleton(algo: str, model: nn.Module, seed: int) -> nn.Module:
    """The reference module filled with ``model``'s weights (plus a random [MASK] row for PGM)."""
    mlp4 = "group_swap.query_processor.0.weight" in model.state_dict()
    ref = RefPartitionDIT(2, 2, mlp4) if algo == "pgm" else RefDIT(2)
    state = {ours_to_reference(k): v.clone() for k, v in model.state_dict().items()}
    if algo == "pgm":
        g = torch.Generator().manual_seed(seed)
        for key in ("vocab_embed.embedding", "output_layer.linear.weight", "output_layer.linear.bias"):
            extra = torch.randn((1, *state[key].shape[1:]), generator=g)
            state[key] = torch.cat([state[key], extra])
    state["rotary_emb.inv_freq"] = ref.rotary_emb.inv_freq
    ref.load_state_dict(state, strict=True)  # every name and shape of the documented layout
    return ref


def write_reference_ckpt(
    path: Path,
    algo: str,
    raw: nn.Module,
    ema: nn.Module,
    hparams: dict | None = None,
    drop_inv_freq: bool = False,
) -> Path:
    ref_raw, ref_ema = reference_skeleton(algo, raw, 1), reference_skeleton(algo, ema, 2)
    state = {
        f"backbone.{k}": v
        for k, v in ref_raw.state_dict().items()
        if not (drop_inv_freq and k.endswith("inv_freq"))
    }
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "2.x",
        "state_dict": {**state, "noise.dummy_buffer": torch.zeros(1)},
        "ema": {
            "decay": 0.9999,
            "num_updates": 1234,
            "shadow_params": [p.detach().clone() for p in ref_ema.parameters()],
        },
        "optimizer_states": [],
    }
    if hparams is not None:
        ckpt["hyper_parameters"] = hparams
    torch.save(ckpt, path)
    return path


def pgm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, N_REAL, (3, LENGTH), generator=g)
    groups = (torch.rand(3, LENGTH, generator=g) < 0.5).long()
    groups[2] = 1  # an empty group 0
    return x, groups


# --- tests -----------------------------------------------------------------------------------------------------


def test_reference_order_is_the_reference_modules_order() -> None:
    assert reference_parameter_names("pgm", n_encoder_blocks=2, n_decoder_blocks=2) == [
        n for n, _ in RefPartitionDIT(2, 2).named_parameters()
    ]
    assert reference_parameter_names("mdlm", n_blocks=2) == [n for n, _ in RefDIT(2).named_parameters()]
    ours = [n for n, _ in random_model("pgm", 0).named_parameters()]
    assert [ours_to_reference(n) for n in ours] != reference_parameter_names(
        "pgm", 0, 2, 2
    )  # the orders differ


def test_convert_pgm_gives_identical_logits(tmp_path: Path, capsys) -> None:
    raw, ema = random_model("pgm", 10, "learn+freqs+mean"), random_model("pgm", 11, "learn+freqs+mean")
    hparams = {
        "config": {
            "model": {
                "hidden_size": HIDDEN,
                "n_heads": HEADS,
                "length": LENGTH,
                "dropout": 0.0,
                "swap": {
                    "pre_query_mode": "learn+freqs+mean",
                    "query_process_mode": "linear",
                    "normalize_mode": "layernorm",
                },
            }
        }
    }
    ckpt = write_reference_ckpt(tmp_path / "pgm.ckpt", "pgm", raw, ema, hparams)
    capsys.readouterr()
    assert (
        main(
            [
                "convert",
                str(ckpt),
                str(tmp_path / "run"),
                "--algo",
                "pgm",
                "--allow-pickle",
                "--tokenizer",
                "none",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["step"],
        summary["vocab_size"],
        summary["length"],
        summary["ignored_non_backbone_keys"],
    ) == (1234, N_REAL, LENGTH, 1)
    assert summary["model"]["swap_query_mode"] == "learn+freqs+mean" and summary["model"]["n_heads"] == HEADS
    x, groups = pgm_inputs()
    for weights, expected in (("ema", ema), ("raw", raw)):
        run = load_run(tmp_path / "run", weights=weights)
        assert run.step == 1234 and run.cfg.algo == "pgm" and run.algorithm.vocab_size == N_REAL
        with torch.no_grad():
            assert torch.equal(run.model(x, groups), expected(x, groups))
    # --weights raw: the raw weights everywhere
    convert_checkpoint(ckpt, tmp_path / "run-raw", "pgm", allow_pickle=True, weights="raw", tokenizer="none")
    with torch.no_grad():
        assert torch.equal(load_run(tmp_path / "run-raw").model(x, groups), raw(x, groups))


def test_convert_reference_mlp4_query_processor(tmp_path: Path) -> None:
    """The reference's Linear-SiLU-Linear GroupSwap projection is partgm's ``mlp4``, under the same names."""
    assert reference_parameter_names("pgm", n_encoder_blocks=2, n_decoder_blocks=2, mlp4=True) == [
        n for n, _ in RefPartitionDIT(2, 2, mlp4=True).named_parameters()
    ]
    raw, ema = random_model("pgm", 12, projection="mlp4"), random_model("pgm", 13, projection="mlp4")
    ckpt = write_reference_ckpt(tmp_path / "mlp4.ckpt", "pgm", raw, ema)
    convert_checkpoint(ckpt, tmp_path / "run", "pgm", allow_pickle=True, tokenizer="none")
    x, groups = pgm_inputs()
    run = load_run(tmp_path / "run")
    assert run.cfg.model.swap_projection == "mlp4"
    with torch.no_grad():
        assert torch.equal(run.model(x, groups), ema(x, groups))


def test_convert_mdlm_gives_identical_logits(tmp_path: Path) -> None:
    raw, ema = random_model("mdlm", 20), random_model("mdlm", 21)
    ckpt = write_reference_ckpt(tmp_path / "mdlm.ckpt", "mdlm", raw, ema, drop_inv_freq=True)
    with pytest.raises(PartgmError, match="cannot infer the number of attention heads.*--n-heads"):
        convert_checkpoint(ckpt, tmp_path / "run", "mdlm", allow_pickle=True, tokenizer="none")
    convert_checkpoint(ckpt, tmp_path / "run", "mdlm", allow_pickle=True, tokenizer="none", n_heads=HEADS)
    run = load_run(tmp_path / "run")
    g = torch.Generator().manual_seed(3)
    z = torch.randint(0, N_REAL + 1, (2, LENGTH), generator=g)  # with [MASK] ids (N_REAL)
    z[0, 3] = N_REAL
    with torch.no_grad():
        assert torch.equal(run.model(z), ema(z))
    assert (run.algorithm.mask_id, run.cfg.model.n_blocks, run.cfg.model.mlp_ratio) == (N_REAL, 2, 4)
    assert run.cfg.data.length == 1024  # no hyper-parameters, no --length: the paper's length


def test_convert_with_a_tokenizer(tmp_path: Path) -> None:
    import tokenizers

    vocab = {"<|endoftext|>": N_REAL - 1, **{f"w{i}": i for i in range(N_REAL - 1)}}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tok.json"))
    raw = random_model("mdlm", 1)
    ckpt = write_reference_ckpt(tmp_path / "m.ckpt", "mdlm", raw, raw)
    convert_checkpoint(
        ckpt, tmp_path / "run", "mdlm", allow_pickle=True, tokenizer=str(tmp_path / "tok.json"), length=LENGTH
    )
    run = load_run(tmp_path / "run")
    assert run.tokenizer.encode("w3 w5") == [3, 5] and run.data_header["bos_id"] == N_REAL - 1
    assert run.cfg.data.length == LENGTH
    from partgm.run.sampling import Draws, sample_run  # the converted run samples like any other
    from partgm.samplers import SamplingOptions

    (record,) = sample_run(tmp_path / "run", Draws(SamplingOptions(steps=4), num_samples=1, batch=1, seed=0))
    assert len(record["token_ids"]) == LENGTH and record["token_ids"][0] == N_REAL - 1
    pgm = write_reference_ckpt(tmp_path / "p.ckpt", "pgm", random_model("pgm", 1), random_model("pgm", 1))
    with pytest.raises(PartgmError, match=f"has {N_REAL} tokens, the checkpoint {VOCAB_ROWS}"):
        convert_checkpoint(
            pgm,
            tmp_path / "run2",
            "pgm",
            allow_pickle=True,
            tokenizer=str(tmp_path / "tok.json"),
            vocab_size=VOCAB_ROWS,
        )


def test_pickles_need_explicit_opt_in(tmp_path: Path, capsys) -> None:
    raw = random_model("pgm", 0)
    ckpt = write_reference_ckpt(tmp_path / "pgm.ckpt", "pgm", raw, raw)
    capsys.readouterr()
    assert main(["convert", str(ckpt), str(tmp_path / "run"), "--algo", "pgm", "--tokenizer", "none"]) == 2
    err = capsys.readouterr().err
    assert "arbitrary code" in err and "--allow-pickle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(PartgmError, match="does not exist"):
        convert_checkpoint(tmp_path / "nope.ckpt", tmp_path / "run", "pgm", allow_pickle=True)
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle at all")
    with pytest.raises(PartgmError, match="cannot read"):
        convert_checkpoint(tmp_path / "junk.ckpt", tmp_path / "run", "pgm", allow_pickle=True)


def edit_ckpt(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, weights_only=False)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_layout_errors(tmp_path: Path) -> None:
    raw = random_model("pgm", 0)
    good = write_reference_ckpt(tmp_path / "pgm.ckpt", "pgm", raw, raw)

    def convert(path: Path, **kw) -> None:
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        convert_checkpoint(path, out, kw.pop("algo", "pgm"), allow_pickle=True, tokenizer="none", **kw)

    unknown = edit_ckpt(
        good,
        tmp_path / "u.ckpt",
        lambda c: c["state_dict"].update(
            {
                "backbone.encoder.blocks.0.extra_gate.weight": torch.zeros(2),
                "backbone.time_embed.weight": torch.zeros(2),
            }
        ),
    )
    with pytest.raises(PartgmError, match="unknown pgm reference keys: .*extra_gate.*time_embed"):
        convert(unknown, weights="raw")
    with pytest.raises(PartgmError, match="unknown mdlm reference keys"):
        convert(good, algo="mdlm")
    with pytest.raises(PartgmError, match=f"--bos-id {N_REAL} is not a token id"):
        convert(good, weights="raw", bos_id=N_REAL)
    shuffled = edit_ckpt(
        good,
        tmp_path / "s.ckpt",
        lambda c: c["ema"]["shadow_params"].insert(0, c["ema"]["shadow_params"].pop(1)),
    )
    with pytest.raises(PartgmError, match=r"shadow_params\[0\] .*vocab_embed.embedding.*--weights raw"):
        convert(shuffled)
    short = edit_ckpt(good, tmp_path / "e.ckpt", lambda c: c["ema"]["shadow_params"].pop())
    with pytest.raises(PartgmError, match="shadow_params has .* tensors"):
        convert(short)
    no_ema = edit_ckpt(good, tmp_path / "n.ckpt", lambda c: c.pop("ema"))
    with pytest.raises(PartgmError, match="no ema.shadow_params: pass --weights raw"):
        convert(no_ema)
    convert(no_ema, weights="raw")
    bad_heads = {"config": {"model": {"n_heads": 4}}}
    with pytest.raises(PartgmError, match="4 heads contradicts rotary_emb.inv_freq, which implies 2"):
        convert(edit_ckpt(good, tmp_path / "h.ckpt", lambda c: c.update(hyper_parameters=bad_heads)))
    rms = {"config": {"model": {"swap": {"normalize_mode": "rmsnorm"}}}}
    with pytest.raises(PartgmError, match="normalize_mode 'rmsnorm' is not supported"):
        convert(edit_ckpt(good, tmp_path / "r.ckpt", lambda c: c.update(hyper_parameters=rms)))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(PartgmError, match="already exists: pass --overwrite"):
        convert_checkpoint(good, tmp_path / "full", "pgm", allow_pickle=True, tokenizer="none")


def test_sequential_adaln_and_compiled_names(tmp_path: Path) -> None:
    raw = random_model("mdlm", 4)
    path = write_reference_ckpt(tmp_path / "m.ckpt", "mdlm", raw, raw)

    def rename(c: dict) -> None:
        c["state_dict"] = {
            re.sub(r"adaLN_modulation\.(weight|bias)$", r"adaLN_modulation.0.\1", k).replace(
                "backbone.", "backbone._orig_mod."
            ): v
            for k, v in c["state_dict"].items()
        }

    edited = edit_ckpt(path, tmp_path / "seq.ckpt", rename)
    convert_checkpoint(edited, tmp_path / "run", "mdlm", allow_pickle=True, tokenizer="none")
    z = torch.randint(0, N_REAL + 1, (2, LENGTH))
    with torch.no_grad():
        assert torch.equal(load_run(tmp_path / "run").model(z), raw(z))


def test_classes_missing_here_do_not_block_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning checkpoints pickle omegaconf configs and tokenizer objects: when their packages are not
    installed, their state is kept as plain data and the hyper-parameters are still read."""
    (tmp_path / "gone_pkg.py").write_text(
        "class Config(dict):\n    pass\n\nclass Tok:\n    def __init__(self):\n        self.vocab = {'a': 1}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_pkg

    raw = random_model("pgm", 2)
    model_cfg = gone_pkg.Config(
        n_heads=HEADS, length=LENGTH, swap=gone_pkg.Config(pre_query_mode="learn+freqs")
    )
    path = write_reference_ckpt(
        tmp_path / "p.ckpt",
        "pgm",
        raw,
        raw,
        {"config": {"model": model_cfg}, "tokenizer": gone_pkg.Tok()},
        drop_inv_freq=True,
    )
    monkeypatch.delitem(sys.modules, "gone_pkg")
    (tmp_path / "gone_pkg.py").unlink()
    summary = convert_checkpoint(path, tmp_path / "run", "pgm", allow_pickle=True, tokenizer="none")
    assert summary["heads_from"] == "hyper_parameters" and summary["length"] == LENGTH
    x, groups = pgm_inputs()
    with torch.no_grad():
        assert torch.equal(load_run(tmp_path / "run").model(x, groups), raw(x, groups))
