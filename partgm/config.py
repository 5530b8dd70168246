"""Typed run configuration: dataclasses, presets, YAML/JSON files and dotted command-line overrides.

Every field is checked against its declared type when loaded, so ``model.hidden_size=abc`` fails
with a one-line error instead of a traceback deep inside torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from partgm.errors import PartgmError, unknown_choice
from partgm.registry import Registry


@dataclass
class ModelConfig:
    """What every network family shares. Each algorithm builds one family and names its config class
    (``Algorithm.model_config``): ``DiTConfig`` (MDLM, AR, MaskGIT) or ``PartitionConfig`` (PGM)."""

    hidden_size: int = 768
    n_heads: int = 12
    cond_dim: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.1  # residual dropout (the reference recipe's only dropout)
    attention_dropout: float = 0.0  # dropout on the attention weights, off in the reference
    rope_base: float = 10000.0


@dataclass
class DiTConfig(ModelConfig):
    """The DiT trunk: ``n_blocks`` self-attention blocks."""

    n_blocks: int = 12


@dataclass
class PartitionConfig(ModelConfig):
    """The Partition Transformer: encoder / decoder depths, the GroupSwap queries, and how training-mode
    attention is laid out: ``dense`` (one boolean mask), ``blocks`` (group-sorted, one SDPA per block; reads
    the group sizes on the host), ``flex`` (group-sorted FlexAttention block mask, sync-free: CUDA; on CPU
    forward only), ``padded`` (sync-free two-block padded layout); ``auto``: blocks on CPU from L 256, flex
    on CUDA (when torch has FlexAttention), dense elsewhere."""

    n_encoder_blocks: int = 6
    n_decoder_blocks: int = 6
    swap_query_mode: Literal["learn", "learn+freqs", "learn+freqs+mean", "learn+freqs+logsumexp"] = (
        "learn+freqs"
    )
    # mlp4: the reference's Linear-SiLU-Linear (4H); mlp4-gelu: partgm's earlier GELU-tanh variant.
    swap_projection: Literal["linear", "mlp4", "mlp4-gelu"] = "linear"
    attention_layout: Literal["auto", "dense", "blocks", "flex", "padded"] = "auto"


@dataclass
class DataConfig:
    """Where the data comes from and how it is cut into training sequences."""

    corpus: str = "kjv"  # a registered corpus (kjv, openwebtext[:PATH], ...) or a path to .txt / .jsonl / a dir
    tokenizer: str = "gpt2"  # gpt2 | bpe-N | a path to tokenizer.json or a tokenizer directory
    length: int = 128  # sequence length L, including BOS and EOS
    val_fraction: float = 0.02
    cache_dir: str = "data_cache"
    split_documents: str = "none"  # text: none | blank-lines | chars:N (cut each document before the split)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. ``global_batch`` sequences per optimizer step, split over ranks
    and ``micro_batch``-sized gradient-accumulation steps."""

    steps: int = 1000
    global_batch: int = 32
    micro_batch: int = 0  # 0: the whole per-rank batch at once
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    noise_schedule: str = "loglinear"
    label_dropout: float = 0.1  # class-conditional data only: share of labels replaced by the null class
    init_from: str = ""  # a run directory whose weights (EMA) start this run
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


@dataclass
class SampleConfig:
    """Defaults for ``partgm sample``."""

    steps: int = 128
    batch: int = 4
    num_samples: int = 4
    sampler: str = "auto"  # auto, or one of the algorithm's family (``partgm sample --help``)
    nucleus: float = 1.0
    seed: int = 0


@dataclass
class DistillConfig:
    """SDTT distillation (``partgm distill``): used only by that command; other runs ignore it.

    Round r trains the student against a teacher taking ``teacher_steps`` ancestral steps of size
    ``initial_dt * 2**r``; a round lasts ``steps_per_round`` optimizer steps; at its end the teacher
    becomes the student (``teacher_weights``: its raw or EMA weights). ``swap_ema_on_round``: the
    student also continues from its EMA weights. ``loss_precision``: dtype of the divergence."""

    divergence: Literal["reverse-kl", "forward-kl", "mse", "tv", "l1-logprob"] = "reverse-kl"
    teacher_steps: int = 2
    initial_dt: float = 1.0 / 1024
    steps_per_round: int = 10_000
    rounds: int = 7
    teacher_weights: Literal["raw", "ema"] = "raw"
    swap_ema_on_round: bool = False
    loss_precision: Literal["fp32", "fp64", "bf16"] = "fp32"


@dataclass
class RunConfig:
    algo: str = "pgm"  # a registered algorithm: mdlm | mdlm-complement | pgm | ar | ...
    preset: str = ""
    model: ModelConfig = field(default_factory=PartitionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


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
    "cpu-tiny": {
        "hidden_size": 64, "n_heads": 2, "n_blocks": 2, "n_encoder_blocks": 1, "n_decoder_blocks": 1,
        "cond_dim": 32, "dropout": 0.0,
    },
}.items():
    PRESETS.register(_name, _shape)


def model_config_class(algo: str) -> type[ModelConfig]:
    """The model config class of a registered algorithm."""
    from partgm.algorithms import ALGORITHMS

    return ALGORITHMS.get(algo).model_config


def _family_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _fit_model_section(model: dict[str, Any], cls: type[ModelConfig], strict: bool) -> dict[str, Any]:
    """Keep the fields of ``cls``. A field of another family is dropped (``strict`` False: presets and
    run directories written before the per-family configs) or refused with the family named."""
    own = _family_fields(cls)
    foreign = {name for family in (DiTConfig, PartitionConfig) for name in _family_fields(family)} - own
    for key in model:
        if key in foreign and strict:
            raise PartgmError(
                f"model.{key} does not apply to this algorithm's network ({cls.__name__}: "
                f"{', '.join(sorted(own))})"
            )
    return {k: v for k, v in model.items() if k not in foreign}


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


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    if cls is RunConfig and isinstance(data.get("model"), dict):
        hints["model"] = model_config_class(str(data.get("algo", RunConfig.algo)))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        key = min(unknown)
        raise unknown_choice("option", f"{where + '.' if where else ''}{key}",
                             [f"{where + '.' if where else ''}{n}" for n in sorted(names)])
    kwargs = {k: _coerce(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


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


def resolve_config(
    file: str | Path | None = None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> RunConfig:
    """Defaults <- model preset <- ``base`` <- config file <- dotted overrides, type-checked.

    The algorithm and the preset are named by the highest layer that names them; the model section
    is the algorithm's family config; explicit ``model.*`` values win over the preset.
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
    data = to_dict(RunConfig(algo=algo, model=family()))
    if preset:
        _merge(data["model"], _fit_model_section(PRESETS.get(preset), family, strict=False))
    for layer in layers:
        if isinstance(layer.get("model"), dict):
            layer = {**layer, "model": _fit_model_section(layer["model"], family, strict=True)}
        _merge(data, layer)
    apply_overrides(data, overrides)
    cfg = _from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a saved (resolved) config, type-checked. Configs written before the per-family model
    sections hold the fields of every family: the other families' are dropped."""
    data = dict(data)
    if isinstance(data.get("model"), dict):
        family = model_config_class(str(data.get("algo", RunConfig.algo)))
        data["model"] = _fit_model_section(data["model"], family, strict=False)
    cfg = _from_dict(RunConfig, data)
    validate(cfg)
    return cfg


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise PartgmError(message)


def _in_range(where: str, value: float, low: float, high: float, closed_high: bool = False) -> None:
    """low <= value < high (<= high when ``closed_high``), and finite; NaN fails."""
    ok = low <= value <= high if closed_high else low <= value < high
    _check(ok and math.isfinite(value), f"{where}={value} must be in [{low}, {high}{']' if closed_high else ')'}")


def validate(cfg: RunConfig) -> None:
    """Every range and cross-field rule of a config, in one place: run at load time for the command line,
    config files, saved runs and the Python API alike (types are checked by ``_coerce``)."""
    m, d, t, s = cfg.model, cfg.data, cfg.train, cfg.sample
    for name in ("hidden_size", "n_heads", "cond_dim", "mlp_ratio", "n_blocks", "n_encoder_blocks", "n_decoder_blocks"):
        if hasattr(m, name):
            _check(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)} must be >= 1")
    if m.hidden_size % m.n_heads:
        raise PartgmError(f"model.hidden_size={m.hidden_size} is not divisible by model.n_heads={m.n_heads}")
    if (m.hidden_size // m.n_heads) % 2:
        raise PartgmError("model.hidden_size / model.n_heads must be even (rotary embeddings)")
    _in_range("model.dropout", m.dropout, 0.0, 1.0)
    _in_range("model.attention_dropout", m.attention_dropout, 0.0, 1.0)
    _check(m.rope_base > 1.0 and math.isfinite(m.rope_base), f"model.rope_base={m.rope_base} must be > 1")
    if d.length < 4:
        raise PartgmError(f"data.length={d.length} is too short (at least 4: BOS, two tokens, EOS)")
    if not 0.0 < d.val_fraction < 1.0:
        raise PartgmError("data.val_fraction must be in (0, 1)")
    _check(bool(d.corpus.strip()) and bool(d.tokenizer.strip()), "data.corpus and data.tokenizer must be named")
    for name in ("steps", "global_batch", "eval_draws"):
        _check(getattr(t, name) >= 1, f"train.{name}={getattr(t, name)} must be >= 1")
    for name in ("micro_batch", "warmup_steps", "log_every", "eval_every", "eval_batches", "save_every",
                 "keep_last", "seed"):
        _check(getattr(t, name) >= 0, f"train.{name}={getattr(t, name)} must be >= 0")
    _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr={t.lr} must be a positive number")
    for i, beta in enumerate(t.betas):
        _in_range(f"train.betas[{i}]", beta, 0.0, 1.0)
    _check(t.weight_decay >= 0 and math.isfinite(t.weight_decay), f"train.weight_decay={t.weight_decay} must be >= 0")
    _in_range("train.min_lr_ratio", t.min_lr_ratio, 0.0, 1.0, closed_high=True)
    _check(t.grad_clip >= 0 and math.isfinite(t.grad_clip), f"train.grad_clip={t.grad_clip} must be >= 0 (0: off)")
    _in_range("train.ema_decay", t.ema_decay, 0.0, 1.0)
    _in_range("train.label_dropout", t.label_dropout, 0.0, 1.0)
    from partgm.schedules import SCHEDULES

    if t.noise_schedule not in SCHEDULES:
        raise unknown_choice("noise schedule", t.noise_schedule, list(SCHEDULES))
    for name in ("steps", "batch", "num_samples"):
        _check(getattr(s, name) >= 1, f"sample.{name}={getattr(s, name)} must be >= 1")
    _check(s.seed >= 0, f"sample.seed={s.seed} must be >= 0")
    if not 0.0 < s.nucleus <= 1.0:
        raise PartgmError("sample.nucleus must be in (0, 1]")
    k = cfg.distill
    if k.teacher_steps < 1 or k.steps_per_round < 1 or k.rounds < 1:
        raise PartgmError("distill.teacher_steps, distill.steps_per_round and distill.rounds must be positive")
    if not 0.0 < k.initial_dt <= 1.0:
        raise PartgmError("distill.initial_dt must be in (0, 1]")
