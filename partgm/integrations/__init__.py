"""Adapters to other tools, each an optional extra: ``lm_eval`` (EleutherAI lm-evaluation-harness)."""

from typing import Any

from partgm.errors import PartgmError

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def model_arg_bool(name: str, value: Any) -> bool:
    """A boolean of ``--model_args`` (``true`` / ``false``, ``yes`` / ``no``, ``1`` / ``0``); else PartgmError."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TRUE + _FALSE:
        raise PartgmError(f"--model_args {name}={value} is not a boolean: use {name}=true or {name}=false")
    return text in _TRUE
