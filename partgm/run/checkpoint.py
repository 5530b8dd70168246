"""Run directories: atomic files, checkpoints and loading a trained model back (the layout:
``partgm.run.layout``).

Every file is written to a temporary file in its directory, fsynced and renamed over the target; a
checkpoint directory is assembled under a temporary name and renamed once complete, and only then
does ``latest`` move to it. A crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from partgm.algorithms import Algorithm, TokenSpace, build_algorithm
from partgm.config import RunConfig, to_dict
from partgm.data.tokenizers import Tokenizer
from partgm.devices import resolve_device
from partgm.errors import PartgmError
from partgm.fileio import (
    _fsync_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    exchange_paths,
)
from partgm.resolve import config_from_dict
from partgm.run.layout import CHECKPOINTS, CONFIG, DATA, LATEST, TOKENIZER, TRASH, list_checkpoints
from partgm.run.layout import STEP_DIR as _STEP_DIR

WEIGHT_FILES = {"raw": "model.safetensors", "ema": "ema.safetensors"}


# ----------------------------------------------------------------------------- writing a run


def write_run_files(run_dir: Path, cfg: RunConfig, data: Any) -> None:
    """config.json, data.json and (when the data has a tokenizer) tokenizer.json."""
    atomic_write_json(run_dir / CONFIG, to_dict(cfg))
    atomic_write_json(
        run_dir / DATA,
        {
            **dict(data.header),
            "path": str(data.path),
            "vocab_size": int(data.vocab_size),
            "bos_id": data.bos_id,
            "eos_id": data.eos_id,
            "length": int(data.length),
        },
    )
    try:
        tokenizer = data.tokenizer()
    except PartgmError:  # the data directory has no tokenizer.json: `partgm sample` will say so
        tokenizer = None
    if tokenizer is not None:
        tokenizer.save(run_dir)  # writes RUN/tokenizer.json atomically


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies that share no storage, as safetensors requires."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    ema_weights: dict[str, torch.Tensor],
    training_state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step_XXXXXXXX`` atomically, point ``latest`` at it and keep the newest
    ``keep_last`` checkpoints (0: all). ``weights`` / ``ema_weights`` are model state dicts."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in [*root.glob(".tmp-*"), *root.glob(TRASH + "*")]:  # left by a crash mid-save or mid-prune
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step_{step:08d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        tmp.mkdir()
        atomic_write_bytes(tmp / WEIGHT_FILES["raw"], safetensors.torch.save(_tensors(weights)))
        atomic_write_bytes(tmp / WEIGHT_FILES["ema"], safetensors.torch.save(_tensors(ema_weights)))
        buffer = io.BytesIO()  # serialised in memory: torch's zip writer fails with a RuntimeError on a full disk
        torch.save(training_state, buffer)
        atomic_write_bytes(tmp / "training_state.pt", buffer.getvalue())
        atomic_write_json(tmp / "meta.json", {"step": step, "time": time.time()})
    except BaseException as exc:  # a full disk (or any failure): no temporary directory stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PartgmError(f"cannot write checkpoint '{root / name}': {exc.strerror or exc}") from None
        raise
    final = root / name
    if final.exists():  # the same step saved again: swap the copies in one step, then delete the old one
        old = root / f"{TRASH}{name}-{os.getpid()}"
        if exchange_paths(tmp, final):
            os.replace(tmp, old)
        else:
            os.replace(final, old)
            os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_text(root / LATEST, name + "\n")
    if keep_last > 0:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            if old != final:  # renamed out of the list first: a kill mid-delete leaves no half checkpoint
                trash = root / f"{TRASH}{old.name}-{os.getpid()}"
                os.replace(old, trash)
                shutil.rmtree(trash)
        _fsync_dir(root)
    return final


# ----------------------------------------------------------------------------- reading a run


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PartgmError(f"cannot read '{path}': {str(exc).splitlines()[0]}") from None


_GELU_MLP4_KEY = "group_swap.query_processor.fc.weight"


def migrate_config(cfg: RunConfig, weight_names: Iterable[str]) -> RunConfig:
    """Configs carry no version, so a saved config is read against the names of its weights.
    ``swap_projection`` "mlp4" now means the reference's Linear-SiLU-Linear (``query_processor.{0,2}.*``);
    partgm's earlier "mlp4" was Linear-GELU-Linear (``query_processor.{fc,proj}.*``), now "mlp4-gelu":
    weights with those names keep their GELU network."""
    if getattr(cfg.model, "swap_projection", None) == "mlp4" and _GELU_MLP4_KEY in set(weight_names):
        return replace(cfg, model=replace(cfg.model, swap_projection="mlp4-gelu"))
    return cfg


def weight_names(path: Path) -> list[str]:
    """The tensor names of a safetensors file (its header only); [] when it is missing or unreadable."""
    try:
        with safetensors.safe_open(str(path), "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError):
        return []


def read_run_config(run_dir: Path) -> RunConfig:
    """The RunConfig saved in ``RUN/config.json`` (``migrate_config``-ed against its newest checkpoint)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise PartgmError(f"'{run_dir}' is a file, not a run directory: give the directory that holds config.json")
    if not run_dir.is_dir():
        raise PartgmError(f"run directory '{run_dir}' does not exist")
    if not (run_dir / CONFIG).is_file():
        raise PartgmError(f"'{run_dir}' is not a run directory (no config.json)")
    cfg = config_from_dict(_read_json(run_dir / CONFIG))
    checkpoints = list_checkpoints(run_dir)
    return migrate_config(cfg, weight_names(checkpoints[-1] / WEIGHT_FILES["raw"])) if checkpoints else cfg


def read_data_header(run_dir: Path) -> dict[str, Any]:
    """``RUN/data.json``: the data header plus path, vocab_size, bos_id, eos_id and length."""
    path = Path(run_dir) / DATA
    if not path.is_file():
        raise PartgmError(f"run directory '{run_dir}' has no data.json")
    return _read_json(path)


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint directory named by ``RUN/checkpoints/latest``."""
    latest = Path(run_dir) / CHECKPOINTS / LATEST
    if not latest.is_file():
        raise PartgmError(f"run directory '{run_dir}' has no checkpoint (no {CHECKPOINTS}/latest)")
    name = latest.read_text().strip()
    path = latest.parent / name
    if not _STEP_DIR.fullmatch(name) or not path.is_dir():
        raise PartgmError(f"'{latest}' names checkpoint '{name}', which does not exist")
    return path


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file."""
    if not path.is_file():
        raise PartgmError(f"checkpoint file '{path}' is missing")
    try:
        return safetensors.torch.load_file(path, device=str(device))
    except (SafetensorError, OSError) as exc:
        raise PartgmError(
            f"checkpoint file '{path}' is truncated or corrupt: {str(exc).splitlines()[0]}"
        ) from None


def check_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of ``expected`` (a model's state dict)."""
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {list(state[k].shape)}, the model wants {list(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise PartgmError(f"checkpoint does not match the model config: {'; '.join(problems[:3])}{more}")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``model``; keys and shapes must match exactly."""
    state = load_tensors(path)
    check_state(model.state_dict(), state)
    model.load_state_dict(state)


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """The dict saved as ``training_state.pt`` (optimizer, scheduler, sampler, RNG states, ...)."""
    path = checkpoint / "training_state.pt"
    if not path.is_file():
        raise PartgmError(f"checkpoint file '{path}' is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise PartgmError(
            f"checkpoint file '{path}' is truncated or corrupt: {str(exc).splitlines()[0]}"
        ) from None


@dataclass
class IntactCheckpoint:
    """The newest checkpoint of a run that reads back completely: its directory, training state, raw and
    EMA weights, and one line per newer checkpoint that was skipped as damaged."""

    path: Path
    training_state: dict[str, Any]
    weights: dict[str, torch.Tensor]
    ema_weights: dict[str, torch.Tensor]
    skipped: list[str]

    @property
    def step(self) -> int:
        return int(self.training_state["step"])


def load_intact_checkpoint(run_dir: Path) -> IntactCheckpoint:
    """Try the checkpoints from the one ``latest`` names (else the newest) down to the oldest, and return
    the first whose training state and weights all load. Raise, naming each problem, when none does."""
    run_dir = Path(run_dir)
    candidates = list_checkpoints(run_dir)[::-1]
    try:
        named = latest_checkpoint(run_dir)
        candidates = [named] + [c for c in candidates if c != named and c.name < named.name]
    except PartgmError:
        pass
    if not candidates:
        raise PartgmError(f"run directory '{run_dir}' has no checkpoint")
    skipped = []
    for path in candidates:
        try:
            state = load_training_state(path)
            return IntactCheckpoint(path, state, load_tensors(path / WEIGHT_FILES["raw"]),
                                    load_tensors(path / WEIGHT_FILES["ema"]), skipped)
        except PartgmError as exc:
            skipped.append(f"{path.name}: {exc}")
    raise PartgmError(f"no intact checkpoint in '{run_dir}': {'; '.join(skipped)}")


@dataclass
class LoadedRun:
    """A trained model, ready to sample or evaluate: what ``load_run`` (a run directory) and
    ``partgm.run.pretrained.load_pretrained`` (a pretrained directory or Hub id) both return. ``model`` is in
    eval mode on the requested device; ``data_header`` is RUN/data.json (the data header plus path,
    vocab_size, bos_id, eos_id, length; a pretrained directory's: vocab_size, bos_id, eos_id, length);
    ``tokenizer`` is None when there is none; ``step`` the training step of the weights, ``weights`` which
    weights (ema | raw), ``source`` where they were loaded from."""

    cfg: RunConfig
    algorithm: Algorithm
    model: nn.Module
    data_header: dict[str, Any]
    tokenizer: Tokenizer | None
    step: int
    weights: str = "ema"
    source: str = ""

    @property
    def eos_id(self) -> int | None:
        return self.data_header.get("eos_id")


def load_run(
    run_dir: Path,
    weights: str = "ema",
    device: str | torch.device = "cpu",
    algorithm: Algorithm | None = None,
) -> LoadedRun:
    """Rebuild the model of a run from its latest checkpoint. ``weights``: ``ema`` or ``raw``.
    ``algorithm`` overrides the one named by the saved config (for custom algorithms)."""
    if weights not in WEIGHT_FILES:
        raise PartgmError(f"weights must be ema or raw, not '{weights}'")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    header = read_data_header(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if algorithm is None:
        algorithm = build_algorithm(cfg, TokenSpace.from_header(header))
    model = algorithm.build_model(cfg.model)
    load_weights(model, checkpoint / WEIGHT_FILES[weights])
    tokenizer = None
    if (run_dir / TOKENIZER).is_file():
        tokenizer = Tokenizer.from_file(run_dir / TOKENIZER, cfg.data.tokenizer)
    step = int(_read_json(checkpoint / "meta.json")["step"])
    model = model.to(resolve_device(str(device))).eval()
    return LoadedRun(cfg, algorithm, model, header, tokenizer, step, weights, str(run_dir))
