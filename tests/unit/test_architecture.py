"""The package's shape, checked from its source with `ast`: every lmforge import (also the lazy ones
inside functions) names a module that exists, no import cycle, no module over ~400 lines without a
reason in its docstring, and task names are not branched on outside `tasks/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lmforge.tasks import task_names

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "lmforge"
MAX_LINES = 400
LONG_REASON = "Why this module is long:"
MAX_TASK_BRANCHES = 3


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported lmforge module, line) for every import in the file, outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "lmforge"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmforge":
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in MODULES else target, node.lineno))
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def test_every_lmforge_import_names_a_module_that_exists():
    missing = [f"{MODULES[m].relative_to(SRC)}:{line}: {target}" for m, edges in GRAPH.items()
               for target, line in edges if target not in MODULES]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    edges = {m: sorted({t for t, _ in targets if t in MODULES and t != m}) for m, targets in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles (lazy imports count too):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    """The check itself can fail: a made-up edge back from a low module closes a cycle."""
    monkeypatch.setitem(GRAPH, "lmforge.errors", [*GRAPH["lmforge.errors"], ("lmforge.cli", 1)])
    assert any("lmforge.errors" in c for c in _cycles())


@pytest.mark.parametrize("module", sorted(MODULES))
def test_long_modules_say_why(module):
    path = MODULES[module]
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert LONG_REASON in doc, f"{path.relative_to(SRC)} has {lines} lines: split it, or say in its docstring '{LONG_REASON} ...'"


def task_name_branches() -> list[str]:
    """Comparisons (==, !=, in) against a registered task name, outside tasks/."""
    names = set(task_names())
    hits = []
    for module, path in MODULES.items():
        if module.startswith("lmforge.tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                consts = [c for c in [node.left, *node.comparators] for c in ast.walk(c)
                          if isinstance(c, ast.Constant) and c.value in names]
                if consts:
                    hits.append(f"{path.relative_to(SRC)}:{node.lineno}")
            elif isinstance(node, ast.Dict) and sum(isinstance(k, ast.Constant) and k.value in names for k in node.keys) >= 2:
                hits.append(f"{path.relative_to(SRC)}:{node.lineno} (a table keyed by task names)")
    return hits


def test_task_names_are_not_branched_on_outside_tasks():
    hits = task_name_branches()
    assert len(hits) <= MAX_TASK_BRANCHES, "task-name branches outside tasks/ (ask the task's spec instead):\n" + "\n".join(hits)
