"""Open registries: algorithms, samplers, model presets and corpora are looked up by name here.

Outside code adds entries without editing partgm, either by calling ``register`` at import time or by
declaring a Python entry point in the registry's group (``partgm.algorithms``, ``partgm.samplers``,
``partgm.presets``, ``partgm.corpora``) whose target is a module that registers on import (or the
object itself, registered under the entry point's name)::

    [project.entry-points."partgm.algorithms"]
    my-algo = "my_package.algo:MyAlgorithm"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from partgm.errors import PartgmError, unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, in registration order. ``kind`` names the entries in error messages."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, obj: T | None = None, *, replace: bool = False) -> Callable[[T], T] | T:
        """``register(name, obj)`` or ``@register(name)``. Re-registering a name needs ``replace=True``."""

        def add(item: T) -> T:
            if name in self._entries and self._entries[name] is not item and not replace:
                raise PartgmError(f"{self.kind} '{name}' is already registered (pass replace=True)")
            self._entries[name] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        if name not in self._entries:
            self._load_entry_points()
        if name not in self._entries:
            raise unknown_choice(self.kind, name, self.names())
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load_entry_points()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry in metadata.entry_points(group=self.entry_point_group):
            try:
                loaded = entry.load()
            except Exception as exc:  # noqa: BLE001  (a broken plug-in names itself instead of breaking every lookup)
                raise PartgmError(f"{self.kind} plug-in '{entry.name}' ({entry.value}) failed to load: {exc}") from None
            if entry.name not in self._entries and not hasattr(loaded, "__file__"):
                self._entries[entry.name] = loaded
