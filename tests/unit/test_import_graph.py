"""The import graph of engine/, api/ and workflows/ has no cycle.

Every import counts: at module level, under ``if TYPE_CHECKING:``, and inside functions
(a lazy import hides a dependency, it does not remove it). An edge goes from a module to
the module it names: ``from engine import operations`` names ``engine.operations``,
``from engine.dsl import State`` names ``engine.dsl``. The packages a module sits in are
not edges (importing ``engine.dsl`` runs ``engine/__init__``, but that is Python's doing,
not a dependency ``engine.dsl`` declares).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "api", "workflows")

ALLOWED_CYCLES: tuple[frozenset[str], ...] = ()
"""Cycles known and not yet broken, each as the set of its modules. The goal is none: do
not add to it; remove an entry once its cycle is gone."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _imported(name: str, path: Path, tree: ast.Module, modules: set[str]) -> Iterator[str]:
    """The modules ``tree`` names in its imports, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                yield submodule if submodule in modules else module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = {t for t in _imported(name, path, tree, names) if t in names and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_through(graph, component) for component in components]


def _path_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle inside ``component``: a -> b -> ... -> a (breadth-first, shortest)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = _graph()
    assert "engine.spec" in graph["engine.dsl"]
    assert "engine.declarations" in graph["engine.spec"]
    assert "engine.dsl" in graph["workflows.order"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycle() -> None:
    cycles = [
        cycle
        for cycle in _cycles(_graph())
        if not any(set(cycle) <= allowed for allowed in ALLOWED_CYCLES)
    ]
    assert not cycles, "import cycles (a -> b means a imports b):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles
    )
