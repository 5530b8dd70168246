"""Self-contained model directories (``save_pretrained`` / ``from_pretrained``; the Hub: ``partgm.run.hub``).

A pretrained directory holds exactly what is needed to rebuild a model, with no pickle anywhere::

    DIR/model.safetensors   the weights (EMA by default) of the network, our parameter names
    DIR/config.json         the RunConfig fields, plus vocab_size, bos_id, eos_id, step, weights, format
    DIR/tokenizer.json      the tokenizer (absent only when the run had none: config says "tokenizer": null)
    DIR/README.md           a short model card (written for the Hub, ignored when loading)

``import_pretrained`` turns such a directory back into a run directory (config.json, data.json,
tokenizer.json, checkpoints/...), so that ``partgm sample`` / ``partgm eval`` work on it. Uploads and
downloads go through ``huggingface_hub`` (the ``hf`` extra); local directories never touch the network.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from partgm.config import RunConfig, to_dict
from partgm.errors import PartgmError
from partgm.fileio import atomic_write_bytes
from partgm.models.config import PartitionConfig
from partgm.resolve import config_from_dict
from partgm.run import layout
from partgm.run.hub import hub_module, resolve_pretrained, upload_directory

FORMAT = "partgm-pretrained"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
_META_KEYS = ("format", "format_version", "vocab_size", "bos_id", "eos_id", "step", "weights", "tokenizer")


# ----------------------------------------------------------------------------- run directories


def write_run_directory(
    run_dir: str | Path,
    cfg: RunConfig,
    vocab_size: int,
    bos_id: int,
    eos_id: int,
    weights: dict[str, torch.Tensor],
    ema_weights: dict[str, torch.Tensor] | None = None,
    tokenizer: Any | None = None,
    step: int = 0,
    extra_header: dict[str, Any] | None = None,
    space: Any | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a run directory that ``partgm.run.checkpoint.load_run`` reads: config.json, data.json,
    tokenizer.json (when given) and one checkpoint ``step_XXXXXXXX`` holding ``weights`` as the raw and
    ``ema_weights`` (default: the same tensors) as the EMA weights, as a unit (a kill or an error leaves
    no half-written run). The run has no optimizer state, so it can be sampled and evaluated, not
    resumed. ``weights`` must load into the model the config builds. ``space``: the ``TokenSpace``
    (default: from the sizes; image runs pass theirs, ``bos_id`` None). ``overwrite``: replace a non-empty
    ``run_dir`` that is not a run."""
    from partgm.algorithms import TokenSpace, build_algorithm
    from partgm.fileio import atomic_write_json, claim_output, unit_directory
    from partgm.run.checkpoint import check_state, save_checkpoint

    run_dir = Path(run_dir)
    if (run_dir / layout.CHECKPOINTS).exists() or (run_dir / layout.CONFIG).exists():
        raise PartgmError(f"'{run_dir}' already holds a run; pick a new directory")
    claim_output(run_dir, overwrite, "run directory")
    algorithm = build_algorithm(cfg, space or TokenSpace(vocab_size, cfg.data.length, bos_id))
    with torch.device("meta"):
        expected = algorithm.build_model(cfg.model).state_dict()
    check_state(expected, weights)
    if ema_weights is not None:
        check_state(expected, ema_weights)
    with unit_directory(run_dir) as tmp:
        atomic_write_json(tmp / "config.json", to_dict(cfg))
        header = {
            "path": "",
            "tokenizer": cfg.data.tokenizer,
            "vocab_size": int(vocab_size),
            "bos_id": None if bos_id is None else int(bos_id),
            "eos_id": None if eos_id is None else int(eos_id),
            "length": int(cfg.data.length),
            **(extra_header or {}),
        }
        atomic_write_json(tmp / "data.json", header)
        if tokenizer is not None:
            tokenizer.save(tmp)
        state = {"step": int(step), "note": "written by partgm (convert / hub import): no optimizer state"}
        save_checkpoint(tmp, int(step), weights, weights if ema_weights is None else ema_weights, state, keep_last=0)
    return run_dir


# ----------------------------------------------------------------------------- save / load


def _model_card(cfg: RunConfig, meta: dict[str, Any], n_params: int) -> str:
    m = cfg.model
    shape = (
        f"{m.n_encoder_blocks}/{m.n_decoder_blocks} blocks" if isinstance(m, PartitionConfig) else f"{m.n_blocks} blocks"
    )
    return (
        f"---\nlibrary_name: partgm\ntags:\n- partgm\n- {cfg.algo}\n---\n\n"
        f"# partgm {cfg.algo} model\n\n"
        f"- algorithm: `{cfg.algo}`, {shape}, hidden {m.hidden_size}, {m.n_heads} heads, "
        f"{n_params / 1e6:.1f}M parameters\n"
        f"- sequence length {cfg.data.length}, vocabulary {meta['vocab_size']} (+ mask where used), "
        f"tokenizer `{cfg.data.tokenizer}`\n"
        f"- weights: {meta['weights']} at step {meta['step']}\n\n"
        "```python\nfrom partgm.run.pretrained import from_pretrained\n"
        'algorithm, model, tokenizer = from_pretrained("THIS_DIRECTORY_OR_REPO")\n```\n'
    )


def save_pretrained(
    model_or_run: Any,
    directory: str | Path,
    *,
    cfg: RunConfig | None = None,
    algorithm: Any | None = None,
    tokenizer: Any | None = None,
    weights: str = "ema",
    step: int | None = None,
) -> Path:
    """Write ``directory`` (model.safetensors, config.json, tokenizer.json, README.md).

    ``model_or_run``: a run directory (its ``weights``, ``ema`` or ``raw``, are exported), a
    ``partgm.run.checkpoint.LoadedRun``, or an ``nn.Module``, which then needs ``cfg`` and ``algorithm``
    (and ``tokenizer``, optional). ``directory`` is written as a unit (it replaces an earlier one whole; a run
    directory is refused)."""
    from partgm.run.checkpoint import LoadedRun, load_run

    if isinstance(model_or_run, (str, Path)):
        model_or_run = load_run(Path(model_or_run), weights=weights, device="cpu")
    if isinstance(model_or_run, LoadedRun):
        run = model_or_run
        if run.data_header.get("grid"):
            raise PartgmError(f"'{run.source}' is an image run: a pretrained directory holds text models only; "
                              "copy the run directory itself to share it")
        cfg, algorithm, model = run.cfg, run.algorithm, run.model
        tokenizer = run.tokenizer if tokenizer is None else tokenizer
        step = run.step if step is None else step
        eos_id = int(run.data_header.get("eos_id", algorithm.bos_id))
    elif isinstance(model_or_run, nn.Module):
        if cfg is None or algorithm is None:
            raise PartgmError(
                "save_pretrained(model, ...) needs cfg= and algorithm= (or pass a run directory)"
            )
        model = model_or_run
        eos_id = int(getattr(tokenizer, "eos_id", algorithm.bos_id))
    else:
        raise PartgmError(
            f"save_pretrained needs a run directory, a LoadedRun or a model, not {type(model_or_run).__name__}"
        )
    if tokenizer is not None and tokenizer.vocab_size != algorithm.vocab_size:
        raise PartgmError(
            f"tokenizer vocab {tokenizer.vocab_size} does not match the model's {algorithm.vocab_size}"
        )
    from partgm.fileio import claim_output, unit_directory

    directory = claim_output(directory, True, "pretrained directory")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vocab_size": int(algorithm.vocab_size),
        "bos_id": int(algorithm.bos_id),
        "eos_id": eos_id,
        "step": int(step or 0),
        "weights": weights,
        "tokenizer": TOKENIZER_FILE if tokenizer is not None else None,
    }
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    n_params = sum(p.numel() for p in model.parameters())
    with unit_directory(directory) as tmp:
        atomic_write_bytes(
            tmp / WEIGHTS_FILE,
            safetensors.torch.save(tensors, metadata={"format": "pt", "partgm_algo": cfg.algo}),
        )
        if tokenizer is not None:
            tokenizer.save(tmp)
        atomic_write_bytes(tmp / "README.md", _model_card(cfg, meta, n_params).encode())
        atomic_write_bytes(tmp / CONFIG_FILE, (json.dumps({**to_dict(cfg), **meta}, indent=2) + "\n").encode())
    return directory


def _read_config(directory: Path) -> tuple[RunConfig, dict[str, Any]]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise PartgmError(f"'{directory}' is not a partgm pretrained directory (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PartgmError(f"'{path}' is unreadable or corrupt: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise PartgmError(f'\'{path}\' is not a partgm pretrained config (no "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise PartgmError(
            f"'{path}' has format version {data.get('format_version')}, this partgm reads {FORMAT_VERSION}"
        )
    meta = {k: data.pop(k) for k in _META_KEYS if k in data}
    for key in ("vocab_size", "bos_id"):
        if not isinstance(meta.get(key), int):
            raise PartgmError(f"'{path}' lacks an integer \"{key}\"")
    if meta["vocab_size"] < 1 or not 0 <= meta["bos_id"] < meta["vocab_size"]:
        raise PartgmError(f"'{path}': bos_id {meta['bos_id']} is not a token id of vocab_size {meta['vocab_size']}")
    return config_from_dict(data), meta


def load_pretrained(
    directory_or_hub_id: str | Path, device: str = "cpu", revision: str | None = None
):
    """Load a pretrained directory (or download a Hub repository holding one) into a ``LoadedRun`` (the
    type ``load_run`` returns): its ``data_header`` holds vocab_size, bos_id, eos_id and length."""
    from partgm.algorithms import TokenSpace, build_algorithm
    from partgm.data.tokenizers import Tokenizer
    from partgm.run.checkpoint import LoadedRun, check_state, migrate_config

    directory = resolve_pretrained(directory_or_hub_id, revision)
    cfg, meta = _read_config(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise PartgmError(f"pretrained directory '{directory}' has no {WEIGHTS_FILE}")
    try:
        state = safetensors.torch.load_file(str(path))
    except Exception as exc:  # noqa: BLE001 (SafetensorError, OSError: a damaged file)
        raise PartgmError(f"'{path}' is truncated or corrupt: {str(exc).splitlines()[0]}") from None
    cfg = migrate_config(cfg, state)
    algorithm = build_algorithm(cfg, TokenSpace(meta["vocab_size"], cfg.data.length, meta["bos_id"]))
    model = algorithm.build_model(cfg.model)
    check_state(model.state_dict(), state)
    model.load_state_dict(state)
    tokenizer = None
    if meta.get("tokenizer"):
        tok_path = directory / TOKENIZER_FILE
        if not tok_path.is_file():
            raise PartgmError(
                f"pretrained directory '{directory}' has no {TOKENIZER_FILE} (its config names one)"
            )
        tokenizer = Tokenizer.from_file(tok_path, cfg.data.tokenizer)
        if tokenizer.vocab_size != algorithm.vocab_size:
            raise PartgmError(
                f"'{tok_path}' has {tokenizer.vocab_size} tokens, the model {algorithm.vocab_size}"
            )
    from partgm.devices import resolve_device

    header = {"vocab_size": meta["vocab_size"], "bos_id": meta["bos_id"], "eos_id": meta.get("eos_id", meta["bos_id"]),
              "length": cfg.data.length}
    return LoadedRun(cfg, algorithm, model.to(resolve_device(device)).eval(), header, tokenizer,
                     int(meta.get("step", 0)), str(meta.get("weights", "ema")), str(directory_or_hub_id))


def from_pretrained(directory_or_hub_id: str | Path, device: str = "cpu", revision: str | None = None):
    """``(algorithm, model, tokenizer)`` from a pretrained directory or a Hub repository id.

    The model is in eval mode on ``device``; ``tokenizer`` is a ``partgm.data.Tokenizer`` or None."""
    p = load_pretrained(directory_or_hub_id, device, revision)
    return p.algorithm, p.model, p.tokenizer


def import_pretrained(
    directory_or_hub_id: str | Path, run_dir: str | Path, revision: str | None = None, overwrite: bool = False
) -> Path:
    """Write a run directory (usable by ``partgm sample`` / ``partgm eval``) from a pretrained one
    (``overwrite``: replace a non-empty ``run_dir`` that is not a run)."""
    from partgm.fileio import claim_output

    claim_output(run_dir, overwrite, "run directory")  # before any download
    p = load_pretrained(directory_or_hub_id, "cpu", revision)
    state = p.model.state_dict()
    h = p.data_header
    return write_run_directory(
        run_dir, p.cfg, h["vocab_size"], h["bos_id"], int(h["eos_id"]), state, state, p.tokenizer, p.step,
        {"source": str(directory_or_hub_id), "weights_source": p.weights}, overwrite=overwrite,
    )


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
    hub_module()
    with tempfile.TemporaryDirectory(prefix="partgm-push-") as tmp:
        save_pretrained(run_dir, tmp, weights=weights)
        return upload_directory(tmp, repo_id, private, revision,
                                commit_message or f"partgm: upload {Path(run_dir).name}")


def pull_from_hub(repo_id: str, run_dir: str | Path, revision: str | None = None, overwrite: bool = False) -> Path:
    """Download the Hub repository ``repo_id`` (a pretrained directory) into a new run directory."""
    hub_module()
    if Path(repo_id).expanduser().is_dir():
        raise PartgmError(f"'{repo_id}' is a local directory: use `partgm hub import` for local directories")
    return import_pretrained(repo_id, run_dir, revision, overwrite)
