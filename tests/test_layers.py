"""Layers point one way in shared/: no import circle, and no import hidden to dodge one.

An import of a shared module behind ``if TYPE_CHECKING:`` or inside a function or class body hides
an edge of the import graph from Python, not from the design: the circle is still there. So every
import of a shared module in shared/ is at module level, and the graph of those imports has no cycle.
Telemetry, a cross-cutting room, is a thin core: it imports no module of the service but redaction.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "shared"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(SHARED.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the shared module imported (a submodule when ``from package import submodule``)
    line: int
    hidden: str | None  # "TYPE_CHECKING" or "function-local" when not a plain module-level import


def _target(name: str) -> str | None:
    """The longest shared module ``name`` starts with (``shared.jobs.record.JobRecord`` -> ``shared.jobs.record``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, up level - 1 packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Every import of a shared module in ``module``, and where it sits."""

    def visit(node: ast.AST, hidden: str | None) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                for name in _imported_names(child, module, path.name == "__init__.py"):
                    target = _target(name) if name.split(".")[0] == "shared" else None
                    if target is not None and target != module:
                        yield Import(module, target, child.lineno, hidden)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from visit(child, hidden or "TYPE_CHECKING")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                yield from visit(child, hidden or "function-local")
            else:
                yield from visit(child, hidden)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), None)


IMPORTS = [found for module, path in MODULES.items() for found in imports_of(module, path)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in MODULES}
    for found in imports:
        edges[found.source].add(found.target)
    return edges


def test_no_shared_module_hides_an_import_of_another() -> None:
    hidden = [f"{MODULES[i.source].relative_to(ROOT)}:{i.line} imports {i.target} ({i.hidden})" for i in IMPORTS if i.hidden]
    assert hidden == [], "an import hidden from the import graph; fix the circle it dodges:\n" + "\n".join(hidden)


def test_the_imports_of_shared_form_no_circle() -> None:
    assert cycles(graph(IMPORTS)) == []


def test_telemetry_is_a_thin_core_that_knows_no_domain_module() -> None:
    reached = {i.target for i in IMPORTS if i.source.startswith("shared.telemetry")}
    assert {t for t in reached if not t.startswith("shared.telemetry")} <= {"shared.redaction"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from shared.a import b\n", [("shared.a.b", None)]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from shared.a import X\n", [("shared.a", "TYPE_CHECKING")]),
        ("def f():\n    from shared import a\n    return a\n", [("shared.a", "function-local")]),
        ("class C:\n    import shared.a.b\n", [("shared.a.b", "function-local")]),
        ("from . import b\nfrom .b import Y\n", [("shared.a.b", None), ("shared.a.b", None)]),
        ("import json\nfrom fastapi import FastAPI\n", []),
    ],
)
def test_the_check_finds_imports_wherever_they_hide(source: str, expected: list[tuple[str, str | None]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODULES, "shared.a", SHARED / "a" / "__init__.py")
    monkeypatch.setitem(MODULES, "shared.a.b", SHARED / "a" / "b.py")
    monkeypatch.setitem(MODULES, "shared.a.c", SHARED / "a" / "c.py")
    path = tmp_path / "c.py"
    path.write_text(source, encoding="utf-8")
    assert [(i.target, i.hidden) for i in imports_of("shared.a.c", path)] == expected


def test_a_circle_is_found_however_long() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
