"""What the commands share: argparse types for numeric flags (a bad value is a one-line usage error, not a
traceback later) and the argument groups declared once (config, weights, device, precision, sampling)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


def _number(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'") from None


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


SEEDS = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


def seed(text: str) -> int:
    """A generator seed: an integer torch accepts."""
    value = _number(text, int)
    if not SEEDS[0] <= value <= SEEDS[1]:
        raise argparse.ArgumentTypeError(f"must be an integer in [-2**63, 2**64 - 1], got {value}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def unit_interval(text: str) -> float:
    """A probability mass in (0, 1] (top-p)."""
    value = _number(text, float)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of positive integers, e.g. ``32,128,1024``."""
    return _items(text, positive_int, "positive integers")


def _items(text: str, item, what: str) -> list:
    values = [item(v.strip()) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got '{text}'")
    return values


def nonnegative_floats(text: str) -> list[float]:
    """A comma-separated list of finite numbers >= 0, e.g. ``0,1.5,3`` (guidance weights)."""
    return _items(text, nonnegative_float, "numbers >= 0")


def unit_floats(text: str) -> list[float]:
    """A comma-separated list of numbers in (0, 1], e.g. ``0.99,0.9,0.7`` (sampler thresholds)."""
    return _items(text, unit_interval, "numbers in (0, 1]")


def refresh_rates(text: str) -> list[int]:
    """A comma-separated list of refresh rates: integers >= 0 or ``never`` (read as 0), e.g. ``1,2,never``."""
    return _items(text, lambda v: 0 if v == "never" else nonnegative_int(v), "integers >= 0 or 'never'")


class LazyHelp(str):
    """A help string computed only when help is printed (argparse expands help with ``%``), so that the
    registries it names are imported by ``--help`` only, not by every command line parsed."""

    def __new__(cls, make):
        text = super().__new__(cls, "(help)")
        text.make = make
        return text

    def __mod__(self, params) -> str:
        return self.make() % params


def _names(registry: str) -> str:
    if registry == "algorithms":
        from partgm.algorithms import ALGORITHMS

        return " | ".join(ALGORITHMS.names())
    if registry == "presets":
        from partgm.resolve import PRESETS

        return ", ".join(PRESETS.names())
    from partgm.algorithms import ALGORITHMS
    from partgm.samplers import sampler_names

    return "; ".join(
        f"{name}: {' | '.join(sampler_names(ALGORITHMS.get(name)))}" for name in ALGORITHMS.names()
    )


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--algo``, ``--preset`` and dotted overrides (``partgm prepare | train``)."""
    p.add_argument("--config", help="YAML or JSON config file")
    p.add_argument("--algo", help=LazyHelp(lambda: f"a registered algorithm: {_names('algorithms')} (same as algo=...)"))
    p.add_argument("--preset", help=LazyHelp(lambda: f"a model preset: {_names('presets')} (same as preset=...; "
                                                    "`partgm presets` counts their parameters)"))
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.hidden_size=256 train.steps=500")


def add_weights(p: argparse.ArgumentParser, help: str = "the run's EMA weights or its raw ones") -> None:
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help=help)


def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--device", default=default, help=f"cpu | cuda | cuda:N{' | auto' if default == 'auto' else ''}"
                   f" (default {default})")


def add_precision(p: argparse.ArgumentParser, choices: tuple[str, ...] = ("auto", "fp32", "bf16"),
                  default: str = "auto") -> None:
    p.add_argument("--precision", choices=choices, default=default,
                   help="autocast while sampling: bf16, fp32, or auto (bf16 on CUDA, fp32 on CPU); "
                   "the token draw is always float64")


@dataclass(frozen=True)
class SamplingDefaults:
    """A sampling command's defaults: ``steps``; ``num_samples`` (flag ``num_flag``), ``batch``;
    ``precision`` among ``precisions``; ``guidance`` flags (image runs) or not; a ``--sampler`` flag or not
    (commands that choose their samplers themselves)."""

    steps: int = 128
    num_samples: int = 4
    batch: int = 4
    num_flag: str = "--num-samples"
    precision: str = "auto"
    precisions: tuple[str, ...] = ("auto", "fp32", "bf16")
    guidance: bool = False
    sampler: bool = True


def add_sampling(p: argparse.ArgumentParser, defaults: SamplingDefaults = SamplingDefaults()) -> None:
    """The flags every sampling command shares, declared here only: ``--steps``, ``--sampler``,
    ``--nucleus``, ``--temperature``, ``--precision``, the sample count, ``--batch``, ``--seed`` (and
    ``--guidance``, ``--guidance-schedule``). ``draws`` reads them back."""
    d = defaults
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"sampling steps (default {d.steps})")
    if d.sampler:
        p.add_argument("--sampler", default="auto", help=LazyHelp(
            lambda: f"auto (the algorithm's default) or one of its family's: {_names('samplers')}"))
        p.add_argument("--threshold", type=unit_interval, metavar="TAU", help=(
            "threshold sampler (PGM, MDLM; approximate, opt-in): each step commits every position whose max "
            "probability exceeds TAU (at least ceil(left / steps left)); lower TAU: fewer network calls, "
            "more error from decoding positions together; 1: one token per step when --steps >= length"))
        p.add_argument("--entropy-bound", type=nonnegative_float, metavar="GAMMA", help=(
            "eb sampler (PGM, MDLM; approximate, opt-in): each step commits the lowest-entropy positions "
            "while the entropies before sum under GAMMA nats; larger GAMMA: fewer calls, more error; 0: one "
            "token per step when --steps >= length"))
    p.add_argument("--nucleus", type=unit_interval, default=1.0, help="top-p; 1.0 disables")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="divides the logits; 1.0 disables")
    add_precision(p, d.precisions, d.precision)
    what = "samples per class" if d.num_flag == "--num-per-class" else "samples (image runs: per class)"
    p.add_argument(d.num_flag, dest="num_samples", type=positive_int, default=d.num_samples,
                   help=f"{what} (default {d.num_samples})")
    p.add_argument("--batch", type=positive_int, default=d.batch, help=f"samples per forward pass (default {d.batch})")
    p.add_argument("--seed", type=seed, default=0, help="seed of the one generator every draw uses")
    if d.guidance:
        p.add_argument("--guidance", type=nonnegative_float, default=0.0,
                       help="image runs: classifier-free guidance w (0: none)")
        p.add_argument("--guidance-schedule", choices=("auto", "constant", "linear"), default="auto",
                       help="auto: the authors' (ramp w*k/(S-1); MaskGIT's Halton sampler: constant)")
        a = p.add_argument_group("image runs: the authors' confidence / halton options (samplers/image_schedules.py)")
        a.add_argument("--schedule", choices=("authors", "partgm"), default="authors", help="tokens per step")
        a.add_argument("--r-temp", type=nonnegative_float,
                       help="confidence: Gumbel scale (default 5 for PGM, 4.5 for MaskGIT)")
        a.add_argument("--sm-temp-min", type=positive_float, default=1.0, help="halton: logit multiplier, first step")
        a.add_argument("--sm-temp-max", type=positive_float, default=1.0, help="halton: logit multiplier, last step")
        a.add_argument("--temp-warmup", type=int, default=1, help="halton: steps drawn from softmax(logits * 0.5)")
        a.add_argument("--top-k", type=int, default=-1, help="draw among the k likeliest ids (-1: off)")
        a.add_argument("--randomize", action="store_true", help="halton: roll the order by a random offset per sample")


def image_sampling(args: argparse.Namespace):
    """The authors' sampler options (``ImageSampling``) of the image flags ``add_sampling`` declared."""
    from partgm.samplers.image_schedules import ImageSampling

    if not hasattr(args, "schedule"):
        return ImageSampling()
    return ImageSampling(schedule=args.schedule, r_temp=args.r_temp, sm_temp_min=args.sm_temp_min,
                         sm_temp_max=args.sm_temp_max, temp_warmup=args.temp_warmup, top_k=args.top_k,
                         randomize=args.randomize)


def draws(args: argparse.Namespace, progress: bool = False, sampler=None):
    """The one ``Draws`` (with its ``SamplingOptions``) of the flags ``add_sampling`` declared; ``sampler``
    replaces ``--sampler`` (a configured ``Sampler``). ``--sampler`` with ``--threshold`` /
    ``--entropy-bound`` / ``--refresh`` / ``--compile`` (where the command has them) is configured here."""
    from partgm.run.sampling import Draws
    from partgm.samplers import SamplingOptions
    from partgm.samplers.cached import sampler_choice

    if sampler is None and getattr(args, "sampler", None) is not None:
        sampler = sampler_choice(args.sampler, getattr(args, "refresh", None), getattr(args, "compile", False),
                                 args.threshold, args.entropy_bound)

    options = SamplingOptions(steps=args.steps, nucleus=args.nucleus, temperature=args.temperature,
                              guidance=getattr(args, "guidance", 0.0),
                              guidance_schedule=getattr(args, "guidance_schedule", "auto"), progress=progress)
    return Draws(options, sampler if sampler is not None else getattr(args, "sampler", "auto"), args.num_samples,
                 args.batch,
                 args.seed, args.precision)


def add_overwrite(p: argparse.ArgumentParser, what: str = "an existing output") -> None:
    """``--overwrite``: the one switch that lets a command replace what it did not create now
    (``partgm.fileio.claim_output``)."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} (never a run directory)")


def claim_out(args: argparse.Namespace, beside: tuple[str, ...] = ()) -> None:
    """Applies ``partgm.fileio.claim_output`` to a given ``--out`` and the files beside it with the
    ``beside`` suffixes (a bench's PNG), before any work is done."""
    from partgm.fileio import claim_output

    if getattr(args, "out", None):
        out = Path(args.out)
        for path in (out, *(out.with_suffix(suffix) for suffix in beside)):
            claim_output(path, args.overwrite, "--out")
