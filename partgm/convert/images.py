"""Import the authors' released image checkpoints (``images_pgm_12_12_100epochs.ckpt``,
``images_pgm_14_10_100epochs.ckpt``, ``maskgit_100epochs.ckpt``) into partgm run directories.

Their format (jdeschena/pgm ``image_pretrain``, ``save_network``): a ``torch.save`` of ``{iter,
global_epoch, model_state_dict, optimizer_state_dict}``, keys without ``module.`` / ``_orig_mod.``; no EMA
(their recipe has none), no hyper-parameters.

- PGM (``PartitionDIT``): the text PGM's key layout (``convert.reference_names``) without ``sigma_map``,
  plus ``cls_embed.embedding_table.weight`` (the raw class embedding, null class last) and
  ``reg_tokens.weight`` (2 registers); ``vocab_embed`` has K + 2 rows (K codes, mask, BOS = K + 1) and the
  output layer K + 2 outputs, of which partgm keeps the K codes' (the same logits). Heads come from
  ``rotary_emb.inv_freq``; the GroupSwap query mode (not in the weights) is their config's
  ``learn+freqs`` unless ``swap_query_mode`` says otherwise; the codes per image from ``length``.
- MaskGIT (``Transformer``): names as ``models.maskgit`` (``head.bias`` -> ``head_bias``, ``head.weight``
  is ``tok_emb.weight``); positions, classes and registers from the shapes; heads (not in the weights):
  ``n_heads``, theirs 16."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from partgm.convert.reference_names import map_reference_key
from partgm.errors import PartgmError

IMAGE_ALGOS = ("pgm-image", "maskgit")


def is_image_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    return "model_state_dict" in ckpt


def load_image_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` (their format holds tensors and numbers only)."""
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (UnpicklingError, EOFError, RuntimeError: damaged or not theirs)
        raise PartgmError(f"cannot read '{path}': {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("model_state_dict"), Mapping):
        raise PartgmError(f"'{path}' is not an image checkpoint of the authors (no model_state_dict)")
    return dict(ckpt)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise PartgmError(f"the checkpoint has no '{key}': not the expected image model")
    return tuple(state[key].shape)


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def _square(length: int) -> tuple[int, int]:
    side = math.isqrt(length)
    if side * side != length:
        raise PartgmError(f"{length} codes per image is not a square grid")
    return side, side


def _unknown(keys: list[str], algo: str) -> PartgmError:
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    return PartgmError(f"unknown {algo} image keys: {', '.join(keys[:4])}{more} (is --algo right?)")


def _pgm(state: Mapping[str, torch.Tensor], length: int, swap_query_mode: str | None) -> tuple[dict, dict, dict]:
    rows, hidden = _shape(state, "vocab_embed.embedding")
    n_classes = _shape(state, "cls_embed.embedding_table.weight")[0] - 1
    if _shape(state, "reg_tokens.weight")[0] != 2:
        raise PartgmError("partgm's authors' layout has 2 registers (one per group); this checkpoint has "
                          f"{_shape(state, 'reg_tokens.weight')[0]}")
    ours, unknown = {}, []
    for key, value in state.items():
        if key == "cls_embed.embedding_table.weight":
            name = "cond.class_embedding.weight"
        elif key == "reg_tokens.weight":
            name = "prefix.reg_tokens.weight"
        else:
            name = map_reference_key(key, "pgm")
        if name is None:
            unknown.append(key)
        elif name:
            ours[name] = value
    if unknown:
        raise _unknown(unknown, "pgm-image")
    k = rows - 2  # K codes, then the mask id and BOS
    for name in ("output_layer.linear.weight", "output_layer.linear.bias"):
        ours[name] = ours[name][:k]
    head_dim = 2 * _shape(state, "rotary_emb.inv_freq")[0]
    model = {
        "hidden_size": hidden, "n_heads": hidden // head_dim, "cond_dim": hidden,
        "mlp_ratio": _shape(state, "encoder.blocks.0.mlp.0.weight")[0] // hidden,
        "n_encoder_blocks": _count(state, "encoder.blocks."), "n_decoder_blocks": _count(state, "decoder.layers."),
        "swap_query_mode": swap_query_mode or "learn+freqs", "dropout": 0.0, "image_layout": "authors",
        "swap_projection": "mlp4" if "decoder.group_swap.query_processor.0.weight" in state else "linear",
    }
    return model, ours, {"vocab_size": k, "num_classes": n_classes, "grid": _square(length)}


def _maskgit(state: Mapping[str, torch.Tensor], n_heads: int | None) -> tuple[dict, dict, dict]:
    from partgm.models.maskgit import swiglu_width

    rows, hidden = _shape(state, "tok_emb.weight")
    length = _shape(state, "pos_emb.weight")[0]
    ours, unknown = {}, []
    for key, value in state.items():
        if key == "head.weight":
            if not torch.equal(value, state["tok_emb.weight"]):
                raise PartgmError("head.weight differs from tok_emb.weight: not the tied MaskGIT head")
            continue
        name = "head_bias" if key == "head.bias" else key
        if not (name in ("head_bias", "tok_emb.weight", "pos_emb.weight", "cls_emb.weight", "reg_tokens.weight")
                or name.startswith(("transformer.layers.", "last_norm."))):
            unknown.append(key)
        ours[name] = value
    if unknown:
        raise _unknown(unknown, "maskgit")
    width = _shape(state, "transformer.layers.0.ff.w1.weight")[0]
    ratios = [r for r in range(1, 9) if swiglu_width(r * hidden) == width]
    if not ratios:
        raise PartgmError(f"SwiGLU width {width} matches no MLP ratio of hidden {hidden}")
    heads = n_heads or 16
    if hidden % heads:
        raise PartgmError(f"hidden size {hidden} does not split into {heads} heads (pass --n-heads)")
    model = {
        "hidden_size": hidden, "n_heads": heads, "cond_dim": hidden, "mlp_ratio": 4 if 4 in ratios else ratios[0],
        "n_blocks": _count(state, "transformer.layers."), "dropout": 0.0, "network": "reference",
        "registers": _shape(state, "reg_tokens.weight")[0] if "reg_tokens.weight" in state else 0,
    }
    n_classes = _shape(state, "cls_emb.weight")[0] - 1
    return model, ours, {"vocab_size": rows - 1, "num_classes": n_classes, "grid": _square(length)}


def image_model_state(
    state: Mapping[str, torch.Tensor], algo: str, length: int | None = None, n_heads: int | None = None,
    swap_query_mode: str | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(our ``model`` config section, our state dict in float32, the token space: ``vocab_size`` K,
    ``num_classes``, ``grid``) of an authors' image state dict."""
    if algo not in IMAGE_ALGOS:
        raise PartgmError(f"image checkpoints convert with --algo {' or '.join(IMAGE_ALGOS)}, not '{algo}'")
    state = {k.replace("module.", "").replace("_orig_mod.", ""): v for k, v in state.items()}
    if any(not isinstance(v, torch.Tensor) for v in state.values()):
        raise PartgmError("model_state_dict holds entries that are not tensors")
    if algo == "pgm-image":
        model, ours, space = _pgm(state, length or 1024, swap_query_mode)
    else:
        if length and length != _shape(state, "pos_emb.weight")[0]:
            raise PartgmError(f"--length {length} contradicts pos_emb's {_shape(state, 'pos_emb.weight')[0]} rows")
        model, ours, space = _maskgit(state, n_heads)
    if algo == "pgm-image" and n_heads and n_heads != model["n_heads"]:
        raise PartgmError(f"{n_heads} heads contradicts rotary_emb.inv_freq, which implies {model['n_heads']}")
    return model, {k: v.detach().float().contiguous() for k, v in ours.items()}, space


def convert_image_checkpoint(
    ckpt_path: str | Path, out_run_dir: str | Path, algo: str, length: int | None = None,
    n_heads: int | None = None, tokenizer: str = "none", swap_query_mode: str | None = None,
) -> dict[str, Any]:
    """Convert an authors' image checkpoint into the run directory ``out_run_dir``; returns a summary.
    ``tokenizer``: the image tokenizer that decodes the codes (``llamagen:/path/vq_ds8_c2i.pt``; ``none``:
    the run samples codes, and ``partgm sample`` needs a tokenizer to draw images)."""
    from partgm.algorithms import TokenSpace
    from partgm.config import to_dict
    from partgm.resolve import config_from_dict
    from partgm.run.pretrained import write_run_directory

    out_run_dir = Path(out_run_dir)
    if out_run_dir.exists() and any(out_run_dir.iterdir()):
        raise PartgmError(f"output directory '{out_run_dir}' is not empty")
    ckpt = load_image_checkpoint(ckpt_path)
    model, ours, space = image_model_state(ckpt["model_state_dict"], algo, length, n_heads, swap_query_mode)
    k, grid = space["vocab_size"], space["grid"]
    image: dict[str, Any] = {}
    if tokenizer.lower() != "none":
        from partgm.data.images import load_image_tokenizer

        _, codebook, downsample = load_image_tokenizer(tokenizer)
        if codebook != k:
            raise PartgmError(f"tokenizer '{tokenizer}' has {codebook} codes, the checkpoint {k}")
        image = {"kind": "vq", "size": grid[0] * downsample, "downsample": downsample}
    cfg = config_from_dict({"algo": algo, "model": model,
                            "data": {"tokenizer": tokenizer, "length": grid[0] * grid[1]},
                            "train": {"ema_decay": 0.0}})
    step = int(ckpt.get("iter") or 0)
    header = {"grid": list(grid), "num_classes": space["num_classes"], "image": image,
              "converted_from": str(ckpt_path), "global_epoch": ckpt.get("global_epoch")}
    token_space = TokenSpace(k, cfg.data.length, None, space["num_classes"], grid)
    write_run_directory(out_run_dir, cfg, k, None, None, ours, None, None, step, header, space=token_space)
    return {"run_dir": str(out_run_dir), "algo": algo, "step": step, "vocab_size": k, "grid": list(grid),
            "num_classes": space["num_classes"], "model": to_dict(cfg.model), "tokenizer": tokenizer,
            "parameters": int(sum(v.numel() for v in ours.values()))}
