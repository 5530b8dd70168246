"""Model sizes of a reference checkpoint: inferred from tensor shapes and checked against its hyper-parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from partgm.convert.pickles import get_hparam
from partgm.convert.reference_names import FREQUENCY_DIM, SWAP_QUERY_MODES
from partgm.errors import PartgmError

# ----------------------------------------------------------------------------- sizes


def _count_blocks(keys: list[str], prefix: str) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if found and found != set(range(len(found))):
        raise PartgmError(f"block indices under '{prefix}' are not contiguous: {sorted(found)[:8]}")
    return len(found)


def tensor_shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise PartgmError(f"the checkpoint has no '{key}': not a supported reference layout")
    return tuple(state[key].shape)


def infer_model_config(
    state: Mapping[str, torch.Tensor],
    algo: str,
    hparams: Mapping[str, Any] | None = None,
    n_heads: int | None = None,
    swap_query_mode: str | None = None,
) -> dict[str, Any]:
    """Our ``model`` config section from the tensor shapes (hidden, conditioning, MLP ratio, blocks,
    head size from ``rotary_emb.inv_freq``), the checkpoint's hyper-parameters and explicit flags."""
    hparams = hparams or {}
    keys = list(state)
    hidden = tensor_shape(state, "vocab_embed.embedding")[1]
    cond_dim, freq_dim = tensor_shape(state, "sigma_map.mlp.0.weight")
    if freq_dim != FREQUENCY_DIM:
        raise PartgmError(f"sigma_map reads {freq_dim} sinusoidal features; partgm supports {FREQUENCY_DIM}")
    first = "blocks.0" if algo == "mdlm" else "encoder.blocks.0"
    ratio, rem = divmod(tensor_shape(state, f"{first}.mlp.0.weight")[0], hidden)
    if rem:
        raise PartgmError(
            f"MLP width {tensor_shape(state, f'{first}.mlp.0.weight')[0]} is not a multiple of hidden {hidden}"
        )
    out = {"hidden_size": hidden, "cond_dim": cond_dim, "mlp_ratio": ratio}
    if algo == "mdlm":
        out["n_blocks"] = _count_blocks(keys, "blocks.")
    else:
        out["n_encoder_blocks"] = _count_blocks(keys, "encoder.blocks.")
        out["n_decoder_blocks"] = _count_blocks(keys, "decoder.layers.")
        norm = (
            hparams.get("swap", {}).get("normalize_mode")
            if isinstance(hparams.get("swap"), Mapping)
            else None
        )
        if norm not in (None, "layernorm") or "decoder.group_swap.pre_query_norm.bias" not in state:
            raise PartgmError(
                f"group_swap normalize_mode '{norm or 'without bias'}' is not supported "
                "(partgm converts 'layernorm')"
            )
        mode = swap_query_mode or get_hparam(hparams, "swap.pre_query_mode") or "learn+freqs"
        if mode not in SWAP_QUERY_MODES:
            raise PartgmError(
                f"swap query mode '{mode}' is not supported (choose from {', '.join(SWAP_QUERY_MODES)})"
            )
        out["swap_query_mode"] = mode
        out["swap_projection"] = "mlp4" if "decoder.group_swap.query_processor.0.weight" in state else "linear"
    inv_freq = state.get("rotary_emb.inv_freq")
    heads_from_rope = None
    if inv_freq is not None:
        head_dim = 2 * inv_freq.numel()
        if hidden % head_dim:
            raise PartgmError(
                f"rotary_emb.inv_freq implies head size {head_dim}, which does not divide hidden {hidden}"
            )
        heads_from_rope = hidden // head_dim
        if inv_freq.numel() > 1:
            base = float(inv_freq[1].double() ** (-head_dim / 2))
            out["rope_base"] = 10000.0 if abs(base - 10000.0) < 10.0 else float(round(base))
    heads = n_heads or hparams.get("n_heads") or heads_from_rope
    if not heads:
        raise PartgmError(
            "cannot infer the number of attention heads (no hyper-parameters, no rotary_emb.inv_freq): "
            "pass --n-heads"
        )
    heads = int(heads)
    if heads_from_rope is not None and heads != heads_from_rope:
        raise PartgmError(f"{heads} heads contradicts rotary_emb.inv_freq, which implies {heads_from_rope}")
    if hidden % heads or (hidden // heads) % 2:
        raise PartgmError(f"hidden size {hidden} does not split into {heads} heads of even size")
    out["n_heads"] = heads
    if isinstance(hparams.get("dropout"), (int, float)):
        out["dropout"] = float(hparams["dropout"])
    return out


