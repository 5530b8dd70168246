"""Typed run configuration: the run's dataclasses (data, training, distillation) around a network's
config, read from YAML / JSON files and dotted command-line overrides.

Every field is checked against its declared type when loaded, so ``model.hidden_size=abc`` fails
with a one-line error instead of a traceback deep inside torch; ranges are declared beside the fields
(``partgm.bounds``). The loader is *handed* the model config class: which class an algorithm's network
takes, the presets and the layering of defaults live above the algorithms (``partgm.resolve``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from partgm.bounds import AT_LEAST_0, AT_LEAST_1, FRACTION, Checked, Range
from partgm.errors import PartgmError, unknown_choice
from partgm.models.config import ModelConfig, PartitionConfig
from partgm.schedules import SCHEDULES


@dataclass
class DataConfig(Checked):
    """Where the data comes from and how it is cut into training sequences."""

    corpus: str = "kjv"  # a registered corpus (kjv, openwebtext[:PATH], ...) or a path to .txt / .jsonl / a dir
    tokenizer: str = "gpt2"  # gpt2 | bpe-N | a path to tokenizer.json or a tokenizer directory
    length: int = 128  # sequence length L, including BOS and EOS
    val_fraction: float = 0.02
    cache_dir: str = "data_cache"
    split_documents: str = "none"  # text: none | blank-lines | chars:N (cut each document before the split)

    ranges: ClassVar[dict[str, Range]] = {
        "length": Range(4, says="at least 4 (BOS, two tokens, EOS)"),
        "val_fraction": Range(0.0, 1.0, low_open=True),
    }

    def check(self, where: str) -> None:
        super().check(where)
        if not (self.corpus.strip() and self.tokenizer.strip()):
            raise PartgmError(f"{where}.corpus and {where}.tokenizer must be named")


@dataclass
class TrainConfig(Checked):
    """Optimisation and bookkeeping. ``global_batch`` sequences per optimizer step, split over ranks
    and ``micro_batch``-sized gradient-accumulation steps."""

    steps: int = 1000
    global_batch: int = 32
    micro_batch: int = 0  # 0: the whole per-rank batch at once
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine", "cosine-tail"] = "constant"  # cosine-tail: the image recipe's
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    noise_schedule: str = "loglinear"
    label_dropout: float = 0.1  # class-conditional data only: share of labels replaced by the null class
    init_from: str = ""  # a run directory whose weights start this run
    init_weights: Literal["ema", "raw"] = "ema"  # which of init_from's weights
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    parallel: Literal["ddp", "fsdp"] = "ddp"  # several processes: DDP, or FSDP2 (parameters sharded)
    log_every: int = 10
    eval_every: int = 250
    eval_batches: int = 0  # 0: the whole validation split
    eval_draws: int = 1  # times and masks per validation sequence (more: a smaller error bar)
    save_every: int = 250
    keep_last: int = 2
    progress: bool = True
    tracker: Literal["none", "wandb", "tensorboard"] = "none"  # also log metrics.jsonl's records there

    ranges: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("steps", "global_batch", "eval_draws"), AT_LEAST_1),
        **dict.fromkeys(("micro_batch", "warmup_steps", "log_every", "eval_every", "eval_batches", "save_every",
                         "keep_last", "seed"), AT_LEAST_0),
        "lr": Range(0, low_open=True, says="a positive number"),
        "betas": FRACTION,
        "weight_decay": AT_LEAST_0,
        "min_lr_ratio": Range(0.0, 1.0, high_closed=True),
        "grad_clip": Range(0, says=">= 0 (0: off)"),
        "ema_decay": FRACTION,
        "label_dropout": FRACTION,
    }

    def check(self, where: str) -> None:
        super().check(where)
        if self.noise_schedule not in SCHEDULES:
            raise unknown_choice("noise schedule", self.noise_schedule, list(SCHEDULES))


@dataclass
class DistillConfig(Checked):
    """SDTT distillation (``partgm distill``): the section of distillation runs only.

    Round r trains the student against a teacher taking ``teacher_steps`` ancestral steps of size
    ``initial_dt * teacher_steps**r``; a round lasts ``steps_per_round`` optimizer steps; at its end the
    teacher becomes the student (``teacher_weights``: its raw or EMA weights). ``swap_ema_on_round``: the
    student also continues from its EMA weights, and the EMA restarts. ``start_weights``: the source
    run's weights that teacher and student start from (``raw``: the reference's, with a fresh EMA either
    way). ``loss_precision``: dtype of the divergence."""

    divergence: Literal["reverse-kl", "forward-kl", "mse", "tv", "l1-logprob"] = "reverse-kl"
    teacher_steps: int = 2
    initial_dt: float = 1.0 / 1024
    steps_per_round: int = 10_000
    rounds: int = 7
    teacher_weights: Literal["raw", "ema"] = "raw"
    swap_ema_on_round: bool = False
    start_weights: Literal["ema", "raw"] = "ema"
    loss_precision: Literal["fp32", "fp64", "bf16"] = "fp32"

    ranges: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("steps_per_round", "rounds"), AT_LEAST_1),
        "teacher_steps": Range(2, says=">= 2 (dt grows by that factor every round)"),
        "initial_dt": Range(0.0, 1.0, low_open=True, high_closed=True),
    }

    def check(self, where: str) -> None:
        super().check(where)
        last = self.teacher_steps * self.initial_dt * 2.0 ** (self.rounds - 1)  # the last student's step
        if last > 1.0:
            raise PartgmError(
                f"{where}.initial_dt={self.initial_dt:g} with teacher_steps={self.teacher_steps} and "
                f"rounds={self.rounds} gives the last student a step of {last:g} > 1 (less than one sampling "
                f"step): lower {where}.initial_dt or {where}.rounds")


@dataclass
class RunConfig:
    """A run: its algorithm, the network's config (the algorithm's family class), data and training;
    ``distill`` only for distillation runs (``partgm distill``)."""

    algo: str = "pgm"  # a registered algorithm (``partgm train --help`` names them)
    preset: str = ""
    model: ModelConfig = field(default_factory=PartitionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig | None = None

    def check(self) -> None:
        """Every range and cross-field rule, section by section (types are checked by the loader)."""
        self.model.check("model")
        self.data.check("data")
        self.train.check("train")
        if self.distill is not None:
            self.distill.check("distill")


# Sections that saved run directories may hold and that no run reads any more (``sample``: the
# defaults of ``partgm sample``, which take command-line options instead).
RETIRED_SECTIONS = ("sample",)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert losslessly where obvious (int -> float,
    list -> tuple, strings from the command line)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise PartgmError(f"{where}: '{value}' is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, where)
            except PartgmError:
                continue
        raise PartgmError(f"{where}: {value!r} does not match {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise PartgmError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise PartgmError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise PartgmError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise PartgmError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise PartgmError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise PartgmError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise PartgmError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise PartgmError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where)
    return value


def load_config(data: dict[str, Any], model_class: type[ModelConfig]) -> RunConfig:
    """A type-checked, validated ``RunConfig`` from a mapping whose ``model`` section is read as
    ``model_class``. Retired sections of saved runs are dropped; a null ``distill`` means none."""
    data = {k: v for k, v in data.items() if k not in RETIRED_SECTIONS}
    if data.get("distill") is None:
        data.pop("distill", None)
    hints = {**typing.get_type_hints(RunConfig), "model": model_class, "distill": DistillConfig}
    cfg = _from_dict(RunConfig, data, "", hints)
    cfg.check()
    return cfg


def _from_dict(cls: type, data: dict[str, Any], where: str = "", hints: dict[str, Any] | None = None) -> Any:
    hints = hints or typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        key = min(unknown)
        raise unknown_choice("option", f"{where + '.' if where else ''}{key}",
                             [f"{where + '.' if where else ''}{n}" for n in sorted(names)])
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The JSON-ready mapping of a config; a run without distillation writes no ``distill`` section."""
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if isinstance(cfg, RunConfig) and cfg.distill is None:
        del data["distill"]
    return data


def _parse_scalar(text: str) -> Any:
    """Parse a command-line value with YAML rules (``3`` -> int, ``1e-4`` -> float, ``true`` -> bool)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and text.replace("e-", "").replace("e+", "").replace(".", "").isdigit():
        return float(text)
    return value if value is not None else text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (values are type-checked later)."""
    for item in overrides:
        if "=" not in item:
            raise PartgmError(f"override '{item}' must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise unknown_choice("option", key, [k for k, v in data.items() if isinstance(v, dict)])
            node = node[part]
        if parts[-1] not in node:
            prefix = ".".join(parts[:-1]) + "." if len(parts) > 1 else ""
            raise unknown_choice("option", key, [prefix + k for k in node])
        node[parts[-1]] = _parse_scalar(raw)
    return data


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PartgmError(f"config file '{path}' does not exist")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PartgmError(f"config file '{path}' cannot be parsed: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PartgmError(f"config file '{path}' must hold a mapping at the top level")
    return data


def merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = v
