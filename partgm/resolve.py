"""Which config a run gets: the model presets, the algorithm -> network-config family, and the layering
defaults <- preset <- base <- config file <- dotted overrides. Sits above the algorithms (it asks their
registry which class parses ``model:``) and hands that class to the typed loader (``config.load_config``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from partgm.algorithms import ALGORITHMS
from partgm.config import (
    DistillConfig,
    RunConfig,
    apply_overrides,
    load_config,
    merge,
    read_config_file,
    to_dict,
)
from partgm.errors import PartgmError
from partgm.models.config import LEGACY_MODEL_DEFAULTS, MODEL_FAMILIES, ModelConfig
from partgm.registry import Registry

# Named model shapes. A preset may give fields of several families: each run takes its family's.
PRESETS: Registry[dict[str, Any]] = Registry("preset", "partgm.presets")
for _name, _shape in {
    "mdlm-small": {"hidden_size": 768, "n_heads": 12, "n_blocks": 12, "cond_dim": 128},
    "pgm-6-6-d1024": {
        "hidden_size": 1024, "n_heads": 16, "n_encoder_blocks": 6, "n_decoder_blocks": 6, "cond_dim": 128,
    },
    "pgm-8-8": {"hidden_size": 768, "n_heads": 12, "n_encoder_blocks": 8, "n_decoder_blocks": 8, "cond_dim": 128},
    # Same width and number of blocks as mdlm-small: the matched comparison for training throughput.
    "pgm-6-6-d768": {
        "hidden_size": 768, "n_heads": 12, "n_encoder_blocks": 6, "n_decoder_blocks": 6, "cond_dim": 128,
    },
    "cpu-small": {
        "hidden_size": 256, "n_heads": 4, "n_blocks": 6, "n_encoder_blocks": 3, "n_decoder_blocks": 3,
        "cond_dim": 64, "dropout": 0.0,
    },
    # The paper's image models (LlamaGen VQ-8 codes: 32x32 = 1,024 per image, 16,384 ids; 1,000 classes).
    "pgm-image-12-12": {"hidden_size": 1024, "n_heads": 16, "n_encoder_blocks": 12, "n_decoder_blocks": 12,
                        "cond_dim": 1024},
    "pgm-image-14-10": {"hidden_size": 1024, "n_heads": 16, "n_encoder_blocks": 14, "n_decoder_blocks": 10,
                        "cond_dim": 1024},
    "maskgit-large": {"hidden_size": 1024, "n_heads": 16, "n_blocks": 24, "cond_dim": 1024},
    "cpu-tiny": {
        "hidden_size": 64, "n_heads": 2, "n_blocks": 2, "n_encoder_blocks": 1, "n_decoder_blocks": 1,
        "cond_dim": 32, "dropout": 0.0,
    },
}.items():
    PRESETS.register(_name, _shape)


def model_config_class(algo: str) -> type[ModelConfig]:
    """The model config class of a registered algorithm."""
    return ALGORITHMS.get(algo).model_config


def _family_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def fit_model_section(model: dict[str, Any], cls: type[ModelConfig], strict: bool) -> dict[str, Any]:
    """Keep the fields of ``cls``. A field of another family is dropped (``strict`` False: presets and
    run directories written before the per-family configs) or refused with the family named."""
    own = _family_fields(cls)
    foreign = {name for family in MODEL_FAMILIES for name in _family_fields(family)} - own
    for key in model:
        if key in foreign and strict:
            raise PartgmError(
                f"model.{key} does not apply to this algorithm's network ({cls.__name__}: "
                f"{', '.join(sorted(own))})"
            )
    return {k: v for k, v in model.items() if k not in foreign}


def resolve_config(
    file: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None,
    distill: bool = False,
) -> RunConfig:
    """Defaults <- model preset <- ``base`` <- config file <- dotted overrides, type-checked.

    The algorithm and the preset are named by the highest layer that names them; the model section
    is the algorithm's family config; explicit ``model.*`` values win over the preset. ``distill``:
    the run has a ``distill`` section (its defaults, then the layers' values).
    """
    layers = [base or {}, read_config_file(file) if file else {}]
    overrides = list(overrides or [])

    def named(key: str) -> str | None:
        for o in reversed(overrides):
            if o.split("=", 1)[0].strip() == key:
                return o.split("=", 1)[1].strip()
        return next((str(layer[key]) for layer in reversed(layers) if layer.get(key)), None)

    algo, preset = named("algo") or RunConfig.algo, named("preset")
    family = model_config_class(algo)
    data = to_dict(RunConfig(algo=algo, model=family(), distill=DistillConfig() if distill else None))
    if preset:
        merge(data["model"], fit_model_section(PRESETS.get(preset), family, strict=False))
    for layer in layers:
        if isinstance(layer.get("model"), dict):
            layer = {**layer, "model": fit_model_section(layer["model"], family, strict=True)}
        merge(data, layer)
    apply_overrides(data, overrides)
    return load_config(data, family)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a saved (resolved) config, type-checked. Configs written before the per-family model
    sections hold the fields of every family: the other families' are dropped. A field added since the
    run was saved takes the value that rebuilds its network (``LEGACY_MODEL_DEFAULTS``)."""
    data = dict(data)
    family = model_config_class(str(data.get("algo", RunConfig.algo)))
    if isinstance(data.get("model"), dict):
        model = fit_model_section(data["model"], family, strict=False)
        own = _family_fields(family)
        data["model"] = {**{k: v for k, v in LEGACY_MODEL_DEFAULTS.items() if k in own}, **model}
    return load_config(data, family)
