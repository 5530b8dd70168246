"""Loading the reference Lightning checkpoints: lenient unpickling (opt-in) and plain hyper-parameters."""

from __future__ import annotations

import pickle
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from partgm.errors import PartgmError

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
    if "state_dict" not in ckpt and "model_state_dict" not in ckpt:  # model_state_dict: the image format
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return {"state_dict": dict(ckpt)}
        raise PartgmError(f"'{path}' has no state_dict (keys: {', '.join(map(str, list(ckpt)[:6]))})")
    return dict(ckpt)


def plain_tree(obj: Any, depth: int = 0) -> Any:
    """Configs as plain dicts / lists / scalars: mappings (DictConfig included) and stand-ins for
    classes that could not be imported (an omegaconf DictConfig pickles ``_content`` / ``_val``)."""
    if depth > 30:
        return None
    if isinstance(obj, _Missing):
        d = obj.__dict__
        if "_partgm_list" in d:
            return plain_tree(d["_partgm_list"], depth + 1)
        state = d.get("_partgm_state")
        if isinstance(state, Mapping) and "_content" in state:  # omegaconf DictConfig / ListConfig
            return plain_tree(state["_content"], depth + 1)
        if isinstance(state, Mapping) and "_val" in state:  # omegaconf value node
            return plain_tree(state["_val"], depth + 1)
        plain_state = plain_tree(state, depth + 1)
        items = plain_tree(d.get("_partgm_items"), depth + 1)
        if isinstance(items, dict):
            return {**(plain_state if isinstance(plain_state, dict) else {}), **items}
        return plain_state
    if isinstance(obj, Mapping):
        out = {}
        for k in list(obj.keys()):
            try:
                out[str(k)] = plain_tree(obj[k], depth + 1)
            except Exception:  # noqa: BLE001 (an unresolvable interpolation in a DictConfig)
                out[str(k)] = None
        return out
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        try:
            return [plain_tree(v, depth + 1) for v in obj]
        except Exception:  # noqa: BLE001
            return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return None


def get_hparam(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def reference_model_config(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """``hyper_parameters['config']['model']`` of a Lightning checkpoint as a plain dict ({} if absent)."""
    hp = plain_tree(ckpt.get("hyper_parameters"))
    config = hp.get("config", hp) if isinstance(hp, Mapping) else None
    model = get_hparam(config, "model")
    return model if isinstance(model, dict) else {}


