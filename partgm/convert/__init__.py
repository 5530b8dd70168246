"""Import the authors' released PGM / MDLM text checkpoints (Lightning ``.ckpt``) into a partgm run directory.

Reference layout (spec section 8): ``state_dict`` with the backbone's tensors under ``backbone.``, and
``ema = {decay, num_updates, shadow_params}`` where ``shadow_params`` lists the EMA tensors in the order
of the reference backbone's ``parameters()``. That order is written out here from the reference module
structure (attribute registration order), independent of our own modules:

MDLM ``DIT``: ``vocab_embed.embedding``; ``sigma_map.mlp.{0,2}.{weight,bias}``; ``rotary_emb`` (buffer
only); per block ``blocks.{i}.{norm1.weight, attn_qkv.weight, attn_out.weight, norm2.weight,
mlp.0.{weight,bias}, mlp.2.{weight,bias}, adaLN_modulation.{weight,bias}}``; ``output_layer.{norm_final.weight,
linear.{weight,bias}, adaLN_modulation.{weight,bias}}``.

PGM ``PartitionDIT``: ``vocab_embed``, ``rotary_emb`` (buffer), ``sigma_map``, ``encoder.blocks.{i}`` (as
MDLM blocks), ``decoder.group_swap.{base_embedding, pre_query_norm.{weight,bias}, query_processor.{weight,
bias}`` (``query_processor.{0,2}.{weight,bias}`` for the Linear-SiLU-Linear ``mlp4``: partgm's ``mlp4``,
same names), hidden_to_key_value.{weight,bias}, output_linear.{weight,bias}}`` (``base_embedding`` is a
parameter of the GroupSwap module itself, and ``parameters()`` yields a module's own parameters before
those of its submodules, although the reference assigns the query LayerNorm first),
``decoder.layers.{i}.{q_norm1, kv_norm1, norm2, attn_q, attn_kv, attn_out}.weight, mlp.0.*, mlp.2.*,
adaLN_modulation.*``, ``output_layer``.

Fused layouts are the same as ours (``attn_qkv`` rows q, k, v, head-major; ``attn_kv`` k, v;
``hidden_to_key_value`` keys first), so tensors are copied as they are; the reference vocabulary has a
``[MASK]`` row at the end, which PGM (it never reads nor predicts the mask) drops.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from partgm.config import to_dict
from partgm.convert.images import IMAGE_ALGOS, convert_image_checkpoint, is_image_checkpoint
from partgm.convert.infer import infer_model_config, tensor_shape
from partgm.convert.pickles import get_hparam, load_reference_checkpoint, plain_tree, reference_model_config
from partgm.convert.reference_names import (
    REFERENCE_BUFFERS,
    SUPPORTED_ALGOS,
    backbone_state,
    map_reference_key,
    reference_parameter_names,
)
from partgm.errors import PartgmError
from partgm.fileio import claim_output
from partgm.resolve import config_from_dict

# ----------------------------------------------------------------------------- conversion


def check_known_keys(state: Mapping[str, torch.Tensor], algo: str) -> None:
    """Raise, listing a few, when backbone keys are not part of the supported reference layout."""
    unknown = [k for k in state if map_reference_key(k, algo) is None]
    if unknown:
        more = f" and {len(unknown) - 4} more" if len(unknown) > 4 else ""
        raise PartgmError(
            f"unknown {algo} reference keys: {', '.join(unknown[:4])}{more} "
            f"(is --algo right? see docs/evaluation.md for the supported layouts)"
        )


def map_state(state: Mapping[str, torch.Tensor], algo: str, num_real_tokens: int) -> dict[str, torch.Tensor]:
    """Reference backbone tensors -> our parameter names; unknown keys raise, listing a few. PGM drops
    the reference's trailing [MASK] row of the embedding and of the output layer."""
    check_known_keys(state, algo)
    ours = {}
    for key, value in state.items():
        name = map_reference_key(key, algo)
        if name:
            ours[name] = value.detach().float().contiguous()
    if algo == "pgm":
        for name in ("vocab_embed.embedding", "output_layer.linear.weight", "output_layer.linear.bias"):
            ours[name] = ours[name][:num_real_tokens].contiguous()
    return ours


def ema_state(
    ckpt: Mapping[str, Any], raw: Mapping[str, torch.Tensor], algo: str, cfg_model: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """The EMA weights as a reference-named state dict, matching ``shadow_params`` to the reference
    parameter order; every shape is checked against the raw tensor of the same name."""
    ema = ckpt.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if shadow is None:
        raise PartgmError(
            "the checkpoint has no ema.shadow_params: pass --weights raw to convert the raw weights"
        )
    names = reference_parameter_names(
        algo,
        cfg_model.get("n_blocks", 0),
        cfg_model.get("n_encoder_blocks", 0),
        cfg_model.get("n_decoder_blocks", 0),
        cfg_model.get("swap_projection") == "mlp4",
    )
    params = {k for k in raw if k not in REFERENCE_BUFFERS}
    if set(names) != params:
        extra = sorted(params - set(names))[:3] + [f"missing {k}" for k in sorted(set(names) - params)[:3]]
        raise PartgmError(
            f"the backbone's parameters do not match the reference {algo} layout: {', '.join(extra)}"
        )
    if len(shadow) < len(names):
        raise PartgmError(
            f"ema.shadow_params has {len(shadow)} tensors, the reference {algo} backbone has "
            f"{len(names)} parameters: pass --weights raw"
        )
    out = {k: v for k, v in raw.items() if k in REFERENCE_BUFFERS}
    for i, (name, tensor) in enumerate(zip(names, shadow)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(raw[name].shape):
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise PartgmError(
                f"ema.shadow_params[{i}] is {got}, but parameter {i} of the reference layout, "
                f"'{name}', is {list(raw[name].shape)}: the EMA order does not match; pass --weights raw"
            )
        out[name] = tensor
    return out


def convert_checkpoint(
    ckpt_path: str | Path,
    out_run_dir: str | Path,
    algo: str,
    allow_pickle: bool = False,
    weights: str = "ema",
    length: int | None = None,
    n_heads: int | None = None,
    tokenizer: str = "gpt2",
    vocab_size: int | None = None,
    bos_id: int | None = None,
    swap_query_mode: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert a reference checkpoint into the run directory ``out_run_dir``; returns a summary.

    ``weights``: ``ema`` (default: the EMA weights become the run's EMA weights, the raw ones its raw
    weights) or ``raw`` (the raw weights are both). ``tokenizer``: a tokenizer spec (``gpt2``, a path)
    copied into the run, or ``none``. ``vocab_size``: N real tokens (default: the reference embedding's
    rows minus the trailing [MASK] row). ``overwrite``: replace a non-empty ``out_run_dir`` (never a run)."""
    from partgm.algorithms import TokenSpace, build_algorithm

    if algo in IMAGE_ALGOS:  # the authors' image format: {iter, global_epoch, model_state_dict, ...}
        return convert_image_checkpoint(ckpt_path, out_run_dir, algo, length, n_heads,
                                        "none" if tokenizer == "gpt2" else tokenizer, swap_query_mode)
    if algo not in SUPPORTED_ALGOS:
        raise PartgmError(f"--algo must be one of {', '.join(SUPPORTED_ALGOS)}, not '{algo}'")
    if weights not in ("ema", "raw"):
        raise PartgmError(f"--weights must be ema or raw, not '{weights}'")
    out_run_dir = Path(out_run_dir)
    claim_output(out_run_dir, overwrite, "output directory")
    ckpt = load_reference_checkpoint(ckpt_path, allow_pickle)
    if is_image_checkpoint(ckpt):
        raise PartgmError(f"'{ckpt_path}' is an image checkpoint of the authors: use --algo pgm-image or maskgit")
    if not isinstance(ckpt["state_dict"], Mapping):
        raise PartgmError("the checkpoint's state_dict is not a mapping of tensors")
    raw, ignored = backbone_state(ckpt["state_dict"])
    check_known_keys(raw, algo)
    hparams = reference_model_config(ckpt)
    model_cfg = infer_model_config(raw, algo, hparams, n_heads, swap_query_mode)
    rows = raw["vocab_embed.embedding"].shape[0]
    n_real = vocab_size or rows - 1
    if algo == "mdlm" and n_real != rows - 1:
        raise PartgmError(
            f"MDLM's embedding has {rows} rows: {rows - 1} tokens + [MASK]; --vocab-size {n_real} "
            "does not fit"
        )
    if algo == "pgm" and n_real not in (rows, rows - 1):
        raise PartgmError(
            f"PGM's embedding has {rows} rows; --vocab-size must be {rows - 1} (with a [MASK] row) or {rows}"
        )
    if tensor_shape(raw, "output_layer.linear.weight")[0] != rows:
        raise PartgmError(
            f"output layer has {tensor_shape(raw, 'output_layer.linear.weight')[0]} rows, the embedding {rows}"
        )
    length = length or get_hparam(hparams, "length") or 1024
    tok = None
    if tokenizer.lower() != "none":
        from partgm.data import load_tokenizer

        tok = load_tokenizer(tokenizer)
        if tok.vocab_size != n_real:
            raise PartgmError(
                f"tokenizer '{tokenizer}' has {tok.vocab_size} tokens, the checkpoint {n_real} "
                "(pass --tokenizer none or --vocab-size)"
            )
    bos = bos_id if bos_id is not None else (tok.bos_id if tok is not None else n_real - 1)
    if not 0 <= bos < n_real:
        raise PartgmError(f"--bos-id {bos} is not a token id of the {n_real}-token vocabulary")
    eos = tok.eos_id if tok is not None else bos
    cfg = config_from_dict(
        {
            "algo": algo,
            "model": model_cfg,
            "data": {"tokenizer": tokenizer if tok is not None else "none", "length": int(length)},
        }
    )

    ours_raw = map_state(raw, algo, n_real)
    ours_ema = (
        map_state(ema_state(ckpt, raw, algo, model_cfg), algo, n_real) if weights == "ema" else ours_raw
    )
    algorithm = build_algorithm(cfg, TokenSpace(n_real, cfg.data.length, bos))
    with torch.device("meta"):
        expected = algorithm.build_model(cfg.model).state_dict()
    from partgm.run.checkpoint import check_state

    check_state(expected, ours_raw)
    for name, value in ours_raw.items():
        if not torch.isfinite(value).all():
            raise PartgmError(f"tensor '{name}' holds NaN or infinite values")
    step = int(ckpt.get("global_step") or 0)
    from partgm.run.pretrained import write_run_directory

    write_run_directory(
        out_run_dir,
        cfg,
        n_real,
        bos,
        eos,
        ours_raw,
        ours_ema,
        tok,
        step,
        {"converted_from": str(ckpt_path), "weights_source": weights},
        overwrite=overwrite,
    )
    return {
        "run_dir": str(out_run_dir),
        "algo": algo,
        "weights": weights,
        "step": step,
        "vocab_size": n_real,
        "length": int(length),
        "model": to_dict(cfg.model),
        "tokenizer": cfg.data.tokenizer,
        "parameters": int(sum(v.numel() for v in ours_raw.values())),
        "ema_decay": plain_tree(ckpt.get("ema", {}).get("decay"))
        if isinstance(ckpt.get("ema"), Mapping)
        else None,
        "ignored_non_backbone_keys": len(ignored),
        "heads_from": "--n-heads"
        if n_heads
        else ("hyper_parameters" if hparams.get("n_heads") else "inv_freq"),
    }

