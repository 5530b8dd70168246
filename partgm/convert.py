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
bias}, hidden_to_key_value.{weight,bias}, output_linear.{weight,bias}}`` (``base_embedding`` is a
parameter of the GroupSwap module itself, and ``parameters()`` yields a module's own parameters before
those of its submodules, although the reference assigns the query LayerNorm first),
``decoder.layers.{i}.{q_norm1, kv_norm1, norm2, attn_q, attn_kv, attn_out}.weight, mlp.0.*, mlp.2.*,
adaLN_modulation.*``, ``output_layer``.

Fused layouts are the same as ours (``attn_qkv`` rows q, k, v, head-major; ``attn_kv`` k, v;
``hidden_to_key_value`` keys first), so tensors are copied as they are; the reference vocabulary has a
``[MASK]`` row at the end, which PGM (it never reads nor predicts the mask) drops.
"""

from __future__ import annotations

import pickle
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from partgm.config import config_from_dict, to_dict
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
_BUFFERS = ("rotary_emb.inv_freq",)


def reference_parameter_names(
    algo: str, n_blocks: int = 0, n_encoder_blocks: int = 0, n_decoder_blocks: int = 0
) -> list[str]:
    """Names of the reference backbone's parameters in ``parameters()`` order (the EMA list order)."""
    names = ["vocab_embed.embedding", *_SIGMA_MAP]
    if algo == "mdlm":
        names += [f"blocks.{i}.{n}" for i in range(n_blocks) for n in _DIT_BLOCK]
    elif algo == "pgm":
        names += [f"encoder.blocks.{i}.{n}" for i in range(n_encoder_blocks) for n in _DIT_BLOCK]
        names += [f"decoder.group_swap.{n}" for n in _GROUP_SWAP]
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
    if key in _BUFFERS:
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
        r"decoder\.group_swap\.(base_embedding|(?:pre_query_norm|query_processor|hidden_to_key_value"
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


# ----------------------------------------------------------------------------- loading pickles


class _Missing:
    """Stands in for a class a checkpoint names but this environment cannot import (omegaconf configs,
    tokenizer objects, Lightning callbacks): it keeps the pickled state, items and list entries."""

    _partgm_qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_partgm_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_partgm_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict subclasses are rebuilt item by item
        self.__dict__.setdefault("_partgm_items", {})[key] = value

    def append(self, value: Any) -> None:  # list subclasses too
        self.__dict__.setdefault("_partgm_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_partgm_list", []).extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> _Missing:
        return self


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Missing,), {"_partgm_qualname": f"{module}.{name}"})


_lenient_pickle = types.ModuleType("partgm_lenient_pickle")
_lenient_pickle.Unpickler = _LenientUnpickler  # type: ignore[attr-defined]
_lenient_pickle.load = lambda f, **kw: _LenientUnpickler(f, **kw).load()  # type: ignore[attr-defined]
_lenient_pickle.__dict__.update({k: getattr(pickle, k) for k in ("UnpicklingError", "HIGHEST_PROTOCOL")})


def load_reference_checkpoint(path: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """The checkpoint as a dict: a Lightning ``.ckpt`` (a pickle: needs ``allow_pickle``) or a
    ``.safetensors`` file of backbone tensors (read without pickle; no EMA)."""
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"checkpoint '{path}' does not exist")
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            return {"state_dict": safetensors.torch.load_file(str(path))}
        except Exception as exc:  # noqa: BLE001
            raise PartgmError(f"'{path}' is truncated or corrupt: {str(exc).splitlines()[0]}") from None
    if not allow_pickle:
        raise PartgmError(
            f"'{path}' is a pickle (Lightning checkpoint) and unpickling can run arbitrary code: "
            "pass --allow-pickle (allow_pickle=True) only for a file from a source you trust"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError):
        # classes from packages missing here (omegaconf, transformers, lightning): keep their state only
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
        except Exception as exc:  # noqa: BLE001
            raise PartgmError(
                f"cannot read '{path}': {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None
    except Exception as exc:  # noqa: BLE001 (UnpicklingError, EOFError, RuntimeError: damaged or not a checkpoint)
        raise PartgmError(f"cannot read '{path}': {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not isinstance(ckpt, Mapping):
        raise PartgmError(f"'{path}' holds a {type(ckpt).__name__}, not a checkpoint dict")
    if "state_dict" not in ckpt:
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return {"state_dict": dict(ckpt)}
        raise PartgmError(f"'{path}' has no state_dict (keys: {', '.join(map(str, list(ckpt)[:6]))})")
    return dict(ckpt)


def _plain(obj: Any, depth: int = 0) -> Any:
    """Configs as plain dicts / lists / scalars: mappings (DictConfig included) and stand-ins for
    classes that could not be imported (an omegaconf DictConfig pickles ``_content`` / ``_val``)."""
    if depth > 30:
        return None
    if isinstance(obj, _Missing):
        d = obj.__dict__
        if "_partgm_list" in d:
            return _plain(d["_partgm_list"], depth + 1)
        state = d.get("_partgm_state")
        if isinstance(state, Mapping) and "_content" in state:  # omegaconf DictConfig / ListConfig
            return _plain(state["_content"], depth + 1)
        if isinstance(state, Mapping) and "_val" in state:  # omegaconf value node
            return _plain(state["_val"], depth + 1)
        plain_state = _plain(state, depth + 1)
        items = _plain(d.get("_partgm_items"), depth + 1)
        if isinstance(items, dict):
            return {**(plain_state if isinstance(plain_state, dict) else {}), **items}
        return plain_state
    if isinstance(obj, Mapping):
        out = {}
        for k in list(obj.keys()):
            try:
                out[str(k)] = _plain(obj[k], depth + 1)
            except Exception:  # noqa: BLE001 (an unresolvable interpolation in a DictConfig)
                out[str(k)] = None
        return out
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        try:
            return [_plain(v, depth + 1) for v in obj]
        except Exception:  # noqa: BLE001
            return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return None


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def reference_model_config(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """``hyper_parameters['config']['model']`` of a Lightning checkpoint as a plain dict ({} if absent)."""
    hp = _plain(ckpt.get("hyper_parameters"))
    config = hp.get("config", hp) if isinstance(hp, Mapping) else None
    model = _get(config, "model")
    return model if isinstance(model, dict) else {}


# ----------------------------------------------------------------------------- sizes


def _count_blocks(keys: list[str], prefix: str) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if found and found != set(range(len(found))):
        raise PartgmError(f"block indices under '{prefix}' are not contiguous: {sorted(found)[:8]}")
    return len(found)


def _shape(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
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
    hidden = _shape(state, "vocab_embed.embedding")[1]
    cond_dim, freq_dim = _shape(state, "sigma_map.mlp.0.weight")
    if freq_dim != FREQUENCY_DIM:
        raise PartgmError(f"sigma_map reads {freq_dim} sinusoidal features; partgm supports {FREQUENCY_DIM}")
    first = "blocks.0" if algo == "mdlm" else "encoder.blocks.0"
    ratio, rem = divmod(_shape(state, f"{first}.mlp.0.weight")[0], hidden)
    if rem:
        raise PartgmError(
            f"MLP width {_shape(state, f'{first}.mlp.0.weight')[0]} is not a multiple of hidden {hidden}"
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
        mode = swap_query_mode or _get(hparams, "swap.pre_query_mode") or "learn+freqs"
        if mode not in SWAP_QUERY_MODES:
            raise PartgmError(
                f"swap query mode '{mode}' is not supported (choose from {', '.join(SWAP_QUERY_MODES)})"
            )
        out["swap_query_mode"] = mode
        out["swap_projection"] = "linear"
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


# ----------------------------------------------------------------------------- conversion


def check_known_keys(state: Mapping[str, torch.Tensor], algo: str) -> None:
    """Raise, listing a few, when backbone keys are not part of the supported reference layout."""
    if algo == "pgm" and "decoder.group_swap.query_processor.0.weight" in state:
        raise PartgmError(
            "the reference 'mlp4' query processor (Linear-SiLU-Linear) is not supported: "
            "partgm converts query_process_mode 'linear' only"
        )
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
    )
    params = {k for k in raw if k not in _BUFFERS}
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
    out = {k: v for k, v in raw.items() if k in _BUFFERS}
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
) -> dict[str, Any]:
    """Convert a reference checkpoint into the run directory ``out_run_dir``; returns a summary.

    ``weights``: ``ema`` (default: the EMA weights become the run's EMA weights, the raw ones its raw
    weights) or ``raw`` (the raw weights are both). ``tokenizer``: a tokenizer spec (``gpt2``, a path)
    copied into the run, or ``none``. ``vocab_size``: N real tokens (default: the reference embedding's
    rows minus the trailing [MASK] row)."""
    from partgm.algorithms import TokenSpace, build_algorithm

    if algo not in SUPPORTED_ALGOS:
        raise PartgmError(f"--algo must be one of {', '.join(SUPPORTED_ALGOS)}, not '{algo}'")
    if weights not in ("ema", "raw"):
        raise PartgmError(f"--weights must be ema or raw, not '{weights}'")
    out_run_dir = Path(out_run_dir)
    if out_run_dir.exists() and any(out_run_dir.iterdir()):
        raise PartgmError(f"output directory '{out_run_dir}' is not empty")
    ckpt = load_reference_checkpoint(ckpt_path, allow_pickle)
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
    if _shape(raw, "output_layer.linear.weight")[0] != rows:
        raise PartgmError(
            f"output layer has {_shape(raw, 'output_layer.linear.weight')[0]} rows, the embedding {rows}"
        )
    length = length or _get(hparams, "length") or 1024
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
    from partgm.engine.checkpoint import check_state

    check_state(expected, ours_raw)
    for name, value in ours_raw.items():
        if not torch.isfinite(value).all():
            raise PartgmError(f"tensor '{name}' holds NaN or infinite values")
    step = int(ckpt.get("global_step") or 0)
    from partgm.pretrained import write_run_directory

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
        "ema_decay": _plain(ckpt.get("ema", {}).get("decay"))
        if isinstance(ckpt.get("ema"), Mapping)
        else None,
        "ignored_non_backbone_keys": len(ignored),
        "heads_from": "--n-heads"
        if n_heads
        else ("hyper_parameters" if hparams.get("n_heads") else "inv_freq"),
    }
