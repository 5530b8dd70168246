"""Offline runs of lm-eval fail at once, with the way out, instead of retrying the Hub for ~35 s.

lm-eval downloads each standard task's data set through ``datasets``, which retries the Hugging Face Hub
five times before it gives up. ``go_offline_if_unreachable`` decides first (``HF_DATASETS_OFFLINE`` /
``HF_HUB_OFFLINE`` set, or the Hub's host not answering a 2 s connection) and then switches ``datasets``
and ``huggingface_hub`` to offline mode, so a data set in the local cache still loads and a missing one
fails immediately; ``offline_error`` turns that failure into one line naming the local-task route.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

from partgm.errors import PartgmError

_FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = ("1", "true", "yes", "on")
# what `datasets` / `huggingface_hub` say offline about a data set they do not have (types and messages)
_MISSING = ("offline", "couldn't reach", "cannot be accessed", "doesn't exist on the hub", "localentrynotfound",
            "datasetnotfound", "connection")
_decided: dict[str, str | None] = {"reason": None}
LOCAL_TASKS = ("use a local task instead: a task YAML over a local file, given with --include_path DIR "
               "--tasks NAME (docs/evaluation.md, 'A local task'), or fill the Hugging Face cache once online")


def offline_reason(timeout: float = 2.0) -> str | None:
    """Why the Hub cannot be used (an offline flag, or its host unreachable), or None when it can."""
    for flag in _FLAGS:
        if os.environ.get(flag, "").strip().lower() in _TRUE:
            return f"{flag} is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or exc})"
    return None


def go_offline_if_unreachable(timeout: float = 2.0) -> str | None:
    """Put ``datasets`` / ``huggingface_hub`` in offline mode when the Hub cannot be used (also when they
    are imported already); returns the reason, or None when online."""
    if _decided["reason"] and all(os.environ.get(flag) == "1" for flag in _FLAGS):
        return _decided["reason"]  # decided earlier in this process (the flags are ours)
    reason = offline_reason(timeout)
    if reason is None:
        return None
    _decided["reason"] = reason
    for flag in _FLAGS:
        os.environ[flag] = "1"
    # read once when imported: patch the modules already imported (the others read the environment)
    for module, names in (("datasets.config", _FLAGS), ("huggingface_hub.constants", ("HF_HUB_OFFLINE",))):
        if module in sys.modules:
            for name in names:
                setattr(sys.modules[module], name, True)
    return reason


def offline_error(exc: BaseException, reason: str) -> PartgmError | None:
    """The one-line error for a task data set missing offline (None for an unrelated exception)."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    related = isinstance(exc, ConnectionError) or any(word in text.lower() for word in _MISSING)
    if not related:
        return None
    return PartgmError(f"an lm-eval task's data set is not available offline ({reason}; {text[:200]}): {LOCAL_TASKS}")
