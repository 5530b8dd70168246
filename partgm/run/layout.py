"""Every file and folder of a run directory, named once, and the one rule for starting or resuming it.

Layout::

    RUN/config.json         resolved RunConfig (``to_dict``)
    RUN/data.json           the prepared data's header, plus its path, vocab_size, bos_id, eos_id, length
    RUN/tokenizer.json      copy of the data's tokenizer (when it has one)
    RUN/metrics.jsonl       one JSON record per line
    RUN/.lock               held by the process that trains the run
    RUN/checkpoints/step_XXXXXXXX/{model,ema}.safetensors, training_state.pt, meta.json
    RUN/checkpoints/latest  name of the newest complete checkpoint directory
    RUN/checkpoints/.tmp-*, .trash-*  a checkpoint being written / deleted (removed on the next save)
    RUN/samples/            ``partgm sample`` output (samples-stepsS-seedN.jsonl, images-...)
    RUN/eval/               evaluation records (ppl-val.json, genppl-....json, lm-eval/TASK.json, ...)
    RUN/plots/              ``partgm plot RUN`` output
    RUN/rounds/round-N/     ``partgm distill``: each round's student, a run directory itself

Pure paths: nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path

from partgm.errors import PartgmError

CONFIG = "config.json"
DATA = "data.json"
TOKENIZER = "tokenizer.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRASH = ".trash-"  # prefix of a checkpoint directory being deleted (renamed first, so never half a checkpoint)
SAMPLES = "samples"
EVAL = "eval"
PLOTS = "plots"
ROUNDS = "rounds"
LM_EVAL = "lm-eval"
STEP_DIR = re.compile(r"step_(\d{8})")


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it has a ``config.json`` and a ``checkpoints/`` folder)."""
    path = Path(path)
    return (path / CHECKPOINTS).is_dir() and (path / CONFIG).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (temporary directories are not counted)."""
    root = Path(run_dir) / CHECKPOINTS
    dirs = [p for p in root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)] if root.is_dir() else []
    return sorted(dirs, key=lambda p: p.name)


def check_fresh_or_resume(run_dir: Path, resume: bool, flag: str = "--resume") -> bool:
    """The one rule for a run directory about to be trained into, before any data is prepared.

    Fresh (``resume`` false): ``run_dir`` is new, empty, or a run that never saved a checkpoint (killed
    before its first save: it starts again). Resume: ``run_dir`` must hold a ``config.json``. ``flag`` names
    the resume switch in messages (``--resume``, ``resume=True``). Returns whether ``run_dir`` holds a run
    config (the run's own config then applies on resume)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise PartgmError(f"run directory '{run_dir}' is a file, not a directory")
    saved = (run_dir / CONFIG).is_file()
    if resume and not saved:
        raise PartgmError(f"cannot resume: '{run_dir}' is not a run directory (no {CONFIG})")
    others = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")] if run_dir.is_dir() else []
    if others and not saved:
        raise PartgmError(f"'{run_dir}' is not empty and not a run directory: pick another run directory")
    if not resume and list_checkpoints(run_dir):
        raise PartgmError(f"run directory '{run_dir}' already holds checkpoints: pass {flag} to continue it, "
                          "or pick another run directory")
    return saved
