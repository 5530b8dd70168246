"""SDTT rounds from a trained MDLM / PGM run (``partgm distill RUN_DIR --run-dir OUT [overrides]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from partgm.errors import PartgmError


def distill_config(source: Path, out: Path, overrides: list[str], resume: bool) -> Any:
    """The distillation run's config: the source run's (or, on resume, OUT's) with ``overrides``;
    ``train.init_from`` is the source and ``train.steps`` covers ``distill.rounds`` rounds."""
    from partgm.config import to_dict
    from partgm.resolve import resolve_config
    from partgm.run.checkpoint import read_run_config

    data_overrides = [o for o in overrides if o.split("=", 1)[0].strip().startswith("data.")]
    if data_overrides:
        raise PartgmError(f"'{data_overrides[0]}': a distillation trains on its source run's data, so data.* "
                          "cannot be overridden; distil a run trained on the data you want")
    if not resume and read_run_config(source).distill is not None:
        raise PartgmError(f"'{source}' is a distillation run, not a trained model: distil one of its rounds "
                          f"({source}/rounds/round-N, plain runs)")
    base = to_dict(read_run_config(out if resume else source))
    cfg = resolve_config(None, overrides, base, distill=True)
    if cfg.algo != base["algo"]:
        raise PartgmError(f"a distilled run keeps its teacher's algorithm '{base['algo']}', not '{cfg.algo}'")
    cfg.train.init_from = str(source)
    cfg.train.init_weights = cfg.distill.start_weights
    cfg.train.steps = cfg.distill.rounds * cfg.distill.steps_per_round
    return cfg


def distill_run(source: Path, out: Path, overrides: list[str] | None = None, resume: bool = False) -> dict:
    """Distil the run ``source`` into ``out`` (resume: continue ``out``). Returns the final metrics.
    Each round's student is written to ``out/rounds/round-N`` as a plain run directory."""
    from partgm.algorithms import TokenSpace, build_algorithm
    from partgm.data import PreparedData
    from partgm.distill.algorithm import SDTTAlgorithm
    from partgm.engine import train
    from partgm.run.checkpoint import load_run, read_data_header
    from partgm.run.layout import CONFIG, LOCK, check_fresh_or_resume, list_checkpoints
    from partgm.runs import prepare_data

    if resume and (out / LOCK).is_file() and not (out / CONFIG).is_file():
        resume = False  # killed after taking its lock, before writing its config: nothing to resume yet
    check_fresh_or_resume(out, resume)
    # The first durable state is the first checkpoint (it holds the teacher): until it exists, a resume
    # starts again from the source run, its teacher included (a kill before it changes nothing).
    saved = resume and bool(list_checkpoints(out))
    cfg = distill_config(source, out, list(overrides or []), resume and (out / CONFIG).is_file())
    header = read_data_header(out if saved else source)
    data_path = header.get("path")
    cfg, data = (cfg, PreparedData.load(data_path)) if data_path and Path(data_path).is_dir() else prepare_data(cfg)
    base = build_algorithm(cfg, TokenSpace.from_header({**data.header, "path": None}))
    if base.sampler_family not in ("masked", "partition") or data.header.get("grid"):
        raise PartgmError(f"SDTT distils masked and partition text models, not '{cfg.algo}'")
    # From a checkpoint the teacher's weights are restored with it; a fresh network is enough here.
    teacher = base.build_model(cfg.model) if saved else load_run(source, weights=cfg.distill.start_weights).model
    return train(cfg, data, out, resume=saved, algorithm=SDTTAlgorithm(base, cfg.distill, teacher))
