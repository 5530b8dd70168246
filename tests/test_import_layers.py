"""The import graph of partgm: no cycle, and the lower layers import nothing above them (module-level and
function-level imports alike; ``TYPE_CHECKING`` blocks excluded). Read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import partgm

ROOT = Path(partgm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The partgm modules ``path`` imports (``from pkg import submodule`` names the submodule)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= (subs & MODULES.keys()) or {node.module}
    return {m for m in found if m in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(GRAPH[name]):
            assert state.get(other) != 1, " -> ".join([*path, name, other])
            if other not in state:
                visit(other, [*path, name])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])


def _reach(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for other in GRAPH[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_lower_layers_import_nothing_above_them():
    above_models = ("partgm.algorithms", "partgm.samplers", "partgm.engine", "partgm.resolve", "partgm.config")
    for name in (n for n in GRAPH if n.startswith("partgm.models")):
        assert not {m for m in _reach(name) if m.startswith(above_models)}, name
    for name in (n for n in GRAPH if n.startswith("partgm.images")):  # a leaf: tokenizers, Halton, FID, grids
        assert _reach(name) <= {m for m in MODULES if m.startswith("partgm.images")} | {
            "partgm.errors", "partgm.fileio"}, name
    assert not {m for m in _reach("partgm.config") if m.startswith(("partgm.algorithms", "partgm.resolve"))}
    assert "partgm.algorithms" in GRAPH["partgm.resolve"]  # resolution sits above the algorithms
