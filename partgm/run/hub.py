"""The Hugging Face Hub: resolve a Hub id to a local pretrained directory, push a run, pull one.

Uploads and downloads go through ``huggingface_hub`` (the ``hf`` extra); local directories never touch
the network. Credentials are huggingface_hub's own (``hf auth login`` / ``HF_TOKEN``).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from partgm.errors import PartgmError
from partgm.run.pretrained import import_pretrained, save_pretrained

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise PartgmError(
            "the Hugging Face Hub needs the huggingface_hub package: pip install partgm[hf]"
        ) from None
    return huggingface_hub


def resolve_pretrained(directory_or_hub_id: str | Path, revision: str | None = None) -> Path:
    """A local directory as is; otherwise a Hub repository id, downloaded (or found in the HF cache)."""
    path = Path(directory_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(directory_or_hub_id)
    if path.exists():
        raise PartgmError(f"'{text}' is a file; a pretrained model is a directory")
    if not _HUB_ID.fullmatch(text) or text.startswith((".", "/", "~")):
        raise PartgmError(f"pretrained directory '{text}' does not exist")
    hub = _hub()
    try:
        local = hub.snapshot_download(repo_id=text, revision=revision)
    except Exception as exc:  # noqa: BLE001 (RepositoryNotFoundError, offline mode, network errors, ...)
        raise PartgmError(
            f"'{text}' is not a local directory and could not be fetched from the Hub: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return Path(local)


def push_to_hub(
    run_dir: str | Path,
    repo_id: str,
    weights: str = "ema",
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Export ``run_dir`` with :func:`save_pretrained` and upload it to the Hub repository ``repo_id``
    (created when missing). Credentials are huggingface_hub's own (``hf auth login`` / ``HF_TOKEN``).
    Returns the commit URL or repository URL huggingface_hub reports."""
    hub = _hub()
    with tempfile.TemporaryDirectory(prefix="partgm-push-") as tmp:
        save_pretrained(run_dir, tmp, weights=weights)
        try:
            api = hub.HfApi()
            api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                folder_path=tmp,
                repo_id=repo_id,
                revision=revision,
                commit_message=commit_message or f"partgm: upload {Path(run_dir).name}",
            )
        except PartgmError:
            raise
        except Exception as exc:  # noqa: BLE001 (HfHubHTTPError, authentication, network)
            raise PartgmError(
                f"upload to '{repo_id}' failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from None
    return str(getattr(info, "commit_url", None) or info)


def pull_from_hub(repo_id: str, run_dir: str | Path, revision: str | None = None) -> Path:
    """Download the Hub repository ``repo_id`` (a pretrained directory) into a new run directory."""
    _hub()
    if Path(repo_id).expanduser().is_dir():
        raise PartgmError(f"'{repo_id}' is a local directory: use `partgm hub import` for local directories")
    return import_pretrained(repo_id, run_dir, revision)
