"""The reference backbones' parameter names, in ``parameters()`` order, and their mapping to ours."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from partgm.errors import PartgmError

SUPPORTED_ALGOS = ("pgm", "mdlm")
SWAP_QUERY_MODES = ("learn", "learn+freqs", "learn+freqs+mean", "learn+freqs+logsumexp")
FREQUENCY_DIM = 256  # the reference TimestepEmbedder's sinusoidal size, as ours

_DIT_BLOCK = (
    "norm1.weight",
    "attn_qkv.weight",
    "attn_out.weight",
    "norm2.weight",
    "mlp.0.weight",
    "mlp.0.bias",
    "mlp.2.weight",
    "mlp.2.bias",
    "adaLN_modulation.weight",
    "adaLN_modulation.bias",
)
_CROSS_BLOCK = (
    "q_norm1.weight",
    "kv_norm1.weight",
    "norm2.weight",
    "attn_q.weight",
    "attn_kv.weight",
    "attn_out.weight",
    "mlp.0.weight",
    "mlp.0.bias",
    "mlp.2.weight",
    "mlp.2.bias",
    "adaLN_modulation.weight",
    "adaLN_modulation.bias",
)
_GROUP_SWAP = (
    "base_embedding",
    "pre_query_norm.weight",
    "pre_query_norm.bias",
    "query_processor.weight",
    "query_processor.bias",
    "hidden_to_key_value.weight",
    "hidden_to_key_value.bias",
    "output_linear.weight",
    "output_linear.bias",
)
_SIGMA_MAP = (
    "sigma_map.mlp.0.weight",
    "sigma_map.mlp.0.bias",
    "sigma_map.mlp.2.weight",
    "sigma_map.mlp.2.bias",
)
_OUTPUT = (
    "output_layer.norm_final.weight",
    "output_layer.linear.weight",
    "output_layer.linear.bias",
    "output_layer.adaLN_modulation.weight",
    "output_layer.adaLN_modulation.bias",
)
REFERENCE_BUFFERS = ("rotary_emb.inv_freq",)


_MLP4 = ("query_processor.0.weight", "query_processor.0.bias", "query_processor.2.weight", "query_processor.2.bias")


def reference_parameter_names(
    algo: str, n_blocks: int = 0, n_encoder_blocks: int = 0, n_decoder_blocks: int = 0, mlp4: bool = False
) -> list[str]:
    """Names of the reference backbone's parameters in ``parameters()`` order (the EMA list order).
    ``mlp4``: GroupSwap's query processor is the reference's Linear-SiLU-Linear (``query_process_mode``
    mlp4)."""
    names = ["vocab_embed.embedding", *_SIGMA_MAP]
    if algo == "mdlm":
        names += [f"blocks.{i}.{n}" for i in range(n_blocks) for n in _DIT_BLOCK]
    elif algo == "pgm":
        names += [f"encoder.blocks.{i}.{n}" for i in range(n_encoder_blocks) for n in _DIT_BLOCK]
        swap = [n for n in _GROUP_SWAP if not (mlp4 and n.startswith("query_processor."))]
        if mlp4:
            swap[3:3] = _MLP4  # after base_embedding and pre_query_norm's two tensors
        names += [f"decoder.group_swap.{n}" for n in swap]
        names += [f"decoder.layers.{i}.{n}" for i in range(n_decoder_blocks) for n in _CROSS_BLOCK]
    else:
        raise PartgmError(f"cannot convert algorithm '{algo}' (choose from {', '.join(SUPPORTED_ALGOS)})")
    return names + list(_OUTPUT)


# ----------------------------------------------------------------------------- name mapping

_BLOCK_RULES = (
    (r"(norm1|norm2|q_norm1|kv_norm1)\.weight", r"\1.weight"),
    (r"(attn_qkv|attn_out|attn_q|attn_kv)\.weight", r"\1.weight"),
    (r"mlp\.0\.(weight|bias)", r"mlp.fc.\1"),
    (r"mlp\.2\.(weight|bias)", r"mlp.proj.\1"),
    (r"adaLN_modulation\.(weight|bias)", r"adaLN_modulation.linear.\1"),
)
_ENCODER_ONLY = ("norm1", "attn_qkv")
_DECODER_ONLY = ("q_norm1", "kv_norm1", "attn_q", "attn_kv")


def _map_block(rest: str, kind: str) -> str | None:
    for pattern, repl in _BLOCK_RULES:
        m = re.fullmatch(pattern, rest)
        if m:
            head = rest.split(".")[0]
            if (kind == "self" and head in _DECODER_ONLY) or (kind == "cross" and head in _ENCODER_ONLY):
                return None
            return m.expand(repl)
    return None


def map_reference_key(key: str, algo: str) -> str | None:
    """Our parameter name for a (normalised) reference backbone key; ``""`` for a dropped buffer;
    None for a key this converter does not know."""
    if key in REFERENCE_BUFFERS:
        return ""
    if key == "vocab_embed.embedding":
        return key
    m = re.fullmatch(r"sigma_map\.mlp\.([02])\.(weight|bias)", key)
    if m:
        return f"cond.sigma_map.mlp.{m[1]}.{m[2]}"
    m = re.fullmatch(r"output_layer\.(norm_final\.weight|linear\.weight|linear\.bias)", key)
    if m:
        return key
    m = re.fullmatch(r"output_layer\.adaLN_modulation\.(weight|bias)", key)
    if m:
        return f"output_layer.adaLN_modulation.linear.{m[1]}"
    if algo == "mdlm":
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if m:
            mapped = _map_block(m[2], "self")
            return None if mapped is None else f"blocks.{m[1]}.{mapped}"
        return None
    m = re.fullmatch(r"encoder\.blocks\.(\d+)\.(.+)", key)
    if m:
        mapped = _map_block(m[2], "self")
        return None if mapped is None else f"encoder.{m[1]}.{mapped}"
    m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", key)
    if m:
        mapped = _map_block(m[2], "cross")
        return None if mapped is None else f"decoder.{m[1]}.{mapped}"
    m = re.fullmatch(
        r"decoder\.group_swap\.(base_embedding|(?:pre_query_norm|query_processor(?:\.[02])?|hidden_to_key_value"
        r"|output_linear)\.(?:weight|bias))",
        key,
    )
    if m:
        return f"group_swap.{m[1]}"
    return None


def _normalise(key: str) -> str:
    """Drop torch.compile's ``_orig_mod.`` and a Sequential wrapper around a lone adaLN Linear."""
    key = key.replace("_orig_mod.", "")
    return re.sub(r"adaLN_modulation\.0\.(weight|bias)$", r"adaLN_modulation.\1", key)


def backbone_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the ``backbone.`` tensors with the prefix removed and names normalised, the other keys)."""
    backbone, others = {}, []
    has_prefix = any(k.startswith("backbone.") for k in state_dict)
    for key, value in state_dict.items():
        if has_prefix and not key.startswith("backbone."):
            others.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise PartgmError(f"state_dict entry '{key}' is a {type(value).__name__}, not a tensor")
        backbone[_normalise(key.removeprefix("backbone."))] = value
    if not backbone:
        raise PartgmError("the checkpoint's state_dict holds no backbone tensors")
    return backbone, others


