"""The Hugging Face Hub transport: resolve a Hub id to a local directory (downloaded), upload a directory.
What is pushed or pulled (a pretrained directory) is ``partgm.run.pretrained``'s.

Uploads and downloads go through ``huggingface_hub`` (the ``hf`` extra); local directories never touch
the network. Credentials are huggingface_hub's own (``hf auth login`` / ``HF_TOKEN``).
"""

from __future__ import annotations

import re
from pathlib import Path

from partgm.errors import PartgmError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def hub_module():
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
    hub = hub_module()
    try:
        local = hub.snapshot_download(repo_id=text, revision=revision)
    except Exception as exc:  # noqa: BLE001 (RepositoryNotFoundError, offline mode, network errors, ...)
        raise PartgmError(
            f"'{text}' is not a local directory and could not be fetched from the Hub: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return Path(local)


def upload_directory(
    folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
    commit_message: str = "partgm: upload",
) -> str:
    """Upload ``folder`` to the Hub repository ``repo_id`` (created when missing) -> the commit URL or
    repository URL huggingface_hub reports."""
    hub = hub_module()
    try:
        api = hub.HfApi()
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message=commit_message
        )
    except Exception as exc:  # noqa: BLE001 (HfHubHTTPError, authentication, network)
        raise PartgmError(
            f"upload to '{repo_id}' failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    return str(getattr(info, "commit_url", None) or info)
