"""Sampler objects and their registry.

A sampler belongs to a *family* (``partition``, ``masked``, ``autoregressive``, ...): the kind of
denoiser it can drive. An algorithm names its family (``Algorithm.sampler_family``), so any algorithm of
that family (a distilled student, an image model, an outside algorithm) reuses the family's samplers.
A sampler has a ``plan`` (which positions each step decodes) and a ``sample`` loop that asks the
algorithm for logits (``Algorithm.logits``, with guidance) and chooses tokens (``choose_tokens``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from partgm.errors import PartgmError, unknown_choice
from partgm.registry import Registry
from partgm.samplers.common import Prompt, SamplingOptions

SAMPLER_FAMILIES: dict[str, Registry[Sampler]] = {}


class Sampler:
    """Base class: subclasses set ``name`` and ``family`` and implement ``sample``."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""

    def sample(
        self, algorithm: Any, model: nn.Module, prompt: Prompt, options: SamplingOptions,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Fill the free positions of ``prompt`` -> tokens [B, L] (long). Runs under no_grad, eval mode."""
        raise NotImplementedError


def register_sampler(cls: type[Sampler], replace: bool = False) -> type[Sampler]:
    """Register a ``Sampler`` subclass in its family under its name (usable as a class decorator).
    The first sampler registered in a family is its default (``auto``)."""
    if not cls.name or not cls.family:
        raise PartgmError(f"sampler class {cls.__name__} must set name and family")
    family = SAMPLER_FAMILIES.setdefault(cls.family, Registry(f"{cls.family} sampler", "partgm.samplers"))
    family.register(cls.name, cls(), replace=replace)
    return cls


def sampler_names(family: str) -> list[str]:
    """The samplers of a family, the default first."""
    return SAMPLER_FAMILIES[family].names() if family in SAMPLER_FAMILIES else []


def get_sampler(algorithm: Any, name: str = "auto") -> Sampler:
    """The sampler ``name`` (``auto``: the default) of the algorithm's family."""
    family = SAMPLER_FAMILIES.get(algorithm.sampler_family)
    if family is None or not family.names():
        raise PartgmError(
            f"no sampler for algorithm '{algorithm.name}' (family '{algorithm.sampler_family}'; "
            f"families: {', '.join(SAMPLER_FAMILIES)})"
        )
    if name == "auto":
        return family.get(family.names()[0])
    if name not in family:
        raise unknown_choice("sampler", name, ["auto", *family.names()], f" for {algorithm.name}")
    return family.get(name)
