"""Sampler objects and their registry.

A sampler is registered in a *family* (``partition``, ``masked``, ``autoregressive``, ...): the kind of
denoiser it can drive (an image sampler drives two). An algorithm names its family
(``Algorithm.sampler_family``) and declares the samplers it offers, its default first
(``Algorithm.samplers``); one that declares none offers every sampler of its family. A sampler has a ``plan`` (which positions each step decodes) and a ``sample`` loop that asks the
algorithm for logits (``Algorithm.logits``, with guidance) and chooses tokens (``choose_tokens``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from partgm.errors import PartgmError, unknown_choice
from partgm.registry import Registry
from partgm.samplers.common import Prompt, SamplingOptions
from partgm.samplers.cost import PlanWidths, SamplingCost, Workload

SAMPLER_FAMILIES: dict[str, Registry[Sampler]] = {}


class Sampler:
    """Base class: subclasses set ``name`` and ``family`` (the denoisers it drives) and implement ``sample``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""

    def sample(
        self, algorithm: Any, model: nn.Module, prompt: Prompt, options: SamplingOptions,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Fill the free positions of ``prompt`` -> tokens [B, L] (long). Runs under no_grad, eval mode."""
        raise NotImplementedError

    def flops(self, work: Workload, plan: PlanWidths | None = None) -> SamplingCost | None:
        """The analytic cost of one generation (``partgm.samplers.cost``); ``plan``: the realised
        (clean_width, query_width) per forward pass (``plan_widths``), else the plan's expectation or its
        deterministic widths. None: this sampler has no analytic count."""
        return None


def register_sampler(cls: type[Sampler], replace: bool = False, family: str | None = None) -> type[Sampler]:
    """Register a ``Sampler`` subclass under its name in ``family`` (default: its own ``family``; usable as
    a class decorator)."""
    family = family or cls.family
    if not cls.name or not family:
        raise PartgmError(f"sampler class {cls.__name__} must set name and family")
    registry = SAMPLER_FAMILIES.setdefault(family, Registry(f"{family} sampler", "partgm.samplers"))
    registry.register(cls.name, cls(), replace=replace)
    return cls


def sampler_names(algorithm: Any) -> list[str]:
    """The samplers an algorithm (class or instance) offers, its default first: its declared ``samplers``,
    or, when it declares none, every sampler of its family in registration order."""
    family = SAMPLER_FAMILIES.get(algorithm.sampler_family)
    return list(algorithm.samplers) or (family.names() if family is not None else [])


def get_sampler(algorithm: Any, name: str = "auto") -> Sampler:
    """The sampler ``name`` (``auto``: the default) among those the algorithm offers."""
    names = sampler_names(algorithm)
    if not names:
        raise PartgmError(
            f"no sampler for algorithm '{algorithm.name}' (family '{algorithm.sampler_family}'; "
            f"families: {', '.join(SAMPLER_FAMILIES)})"
        )
    if name == "auto":
        name = names[0]
    if name not in names:
        raise unknown_choice("sampler", name, ["auto", *names], f" for {algorithm.name}")
    family = SAMPLER_FAMILIES.get(algorithm.sampler_family)
    if family is None or name not in family:
        raise PartgmError(f"{algorithm.name} offers sampler '{name}', which is not registered in family "
                          f"'{algorithm.sampler_family}'")
    return family.get(name)
