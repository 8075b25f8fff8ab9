"""The client library imports nothing of Conveyor's: only the standard library, httpx,
and (in its Kafka modules, which the package itself never imports) aiokafka."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import conveyor_client

PACKAGE = Path(conveyor_client.__file__).parent
ALLOWED = frozenset(sys.stdlib_module_names) | {"httpx", "conveyor_client"}
KAFKA = "aiokafka"


def imports_of(path: Path) -> set[str]:
    """The modules ``path`` imports (absolute names; relative imports resolved)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add(f"conveyor_client.{node.module or ''}".rstrip("."))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def top(name: str) -> str:
    return name.split(".")[0]


def own_module(name: str) -> Path | None:
    if top(name) != "conveyor_client":
        return None
    parts = name.split(".")[1:]
    for candidate in (
        PACKAGE.joinpath(*parts).with_suffix(".py") if parts else PACKAGE / "__init__.py",
        PACKAGE.joinpath(*parts, "__init__.py"),
    ):
        if candidate.is_file():
            return candidate
    return None


def test_every_module_imports_only_the_standard_library_httpx_and_aiokafka() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) >= 9
    for path in modules:
        outside = {top(n) for n in imports_of(path)} - ALLOWED - {KAFKA}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_the_package_without_the_kafka_extra_never_imports_aiokafka() -> None:
    """What ``import conveyor_client`` loads, followed through its own imports."""
    seen: set[Path] = set()
    todo = [PACKAGE / "__init__.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = imports_of(path)
        assert KAFKA not in {top(n) for n in names}, f"{path.name} imports aiokafka"
        todo.extend(p for p in map(own_module, names) if p is not None)
    assert {p.name for p in seen} >= {"aio.py", "sync.py", "calls.py", "errors.py", "models.py"}
    assert "emit.py" not in {p.name for p in seen}
