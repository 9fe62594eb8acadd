"""The import graph of exectrack's own modules, read from the source with ``ast``.

Nothing is imported: each file under consumer/, producer/ and exectrack/ is parsed
and its ``import`` statements are resolved to exectrack module names. An import
counts as *module-level* when it runs on ``import`` of the module: in the module
body, a class body, or an ``if``/``try``/``with`` block there, but not in a
function body and not under ``if TYPE_CHECKING:`` (those are how an import circle
is held open, so the layering tests must not count them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from itertools import pairwise
from pathlib import Path

from tests.support.deploy import ROOT

PACKAGE = "exectrack"
"""Folders of the checkout; the wheel installs each as ``exectrack.<folder>`` (pyproject
``sources``)."""


@dataclass(frozen=True)
class Import:
    """One resolved import of an exectrack module: ``line`` in the importer, and
    whether it runs when the importer is imported (``module_level``)."""

    target: str
    line: int
    module_level: bool


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """{module name: file} of every exectrack module in the checkout at ``root``
    (``__init__.py`` names its package)."""
    found: dict[str, Path] = {}
    for path in sorted((root / "src" / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root / "src").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], module_level: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every statement, with whether it runs at import time."""
    for node in body:
        yield node, module_level
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _statements(node.body, False)
        elif isinstance(node, ast.ClassDef):
            yield from _statements(node.body, module_level)
        elif isinstance(node, ast.If):
            yield from _statements(node.body, module_level and not _is_type_checking(node.test))
            yield from _statements(node.orelse, module_level)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _statements(block, module_level)
            for handler in node.handlers:
                yield from _statements(handler.body, module_level)
        elif isinstance(node, ast.With | ast.AsyncWith | ast.For | ast.AsyncFor | ast.While):
            yield from _statements(node.body, module_level)
            yield from _statements(getattr(node, "orelse", []), module_level)
        elif isinstance(node, ast.Match):
            for case in node.cases:
                yield from _statements(case.body, module_level)


def imports_of(name: str, path: Path, modules: set[str], *, external: bool = False) -> list[Import]:
    """The exectrack modules that module ``name`` (file ``path``) imports; with
    ``external``, the other modules it imports instead (standard library, third party).

    ``import a.b.c`` and ``from a.b import c`` (c a module) name ``a.b.c``;
    ``from a.b import f`` (f not a module) names ``a.b``. The parent packages
    that Python imports on the way are not counted: a package importing its own
    submodules is not a circle.
    """
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: list[Import] = []
    for node, module_level in _statements(ast.parse(path.read_text(), str(path)).body, True):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                child = f"{source}.{alias.name}"
                targets.append(child if child in modules else source)
        found.extend(
            Import(target, node.lineno, module_level)
            for target in targets
            if (target == PACKAGE or target.startswith(f"{PACKAGE}.")) != external
        )
    return found


def import_graph(root: Path = ROOT, *, module_level_only: bool = True) -> dict[str, dict[str, int]]:
    """{importer: {imported: line}} over exectrack's modules in the checkout at ``root``
    (an import of itself dropped); with ``module_level_only=False``, every import."""
    files = module_files(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for found in imports_of(name, path, set(files)):
            if found.target != name and (found.module_level or not module_level_only):
                edges.setdefault(found.target, found.line)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle (modules in import order, first == last), or None.

    ``graphlib`` (the standard library's topological sort) finds it.
    """
    try:
        TopologicalSorter({node: set(edges) for node, edges in graph.items()}).prepare()
    except CycleError as exc:
        cycle: list[str] = exc.args[1]
        if cycle[1] not in graph[cycle[0]]:  # graphlib lists predecessors first
            cycle.reverse()
        return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a (line 12) -> b (line 3) -> a``: where each import of the cycle is."""
    steps = [f"{a} (line {graph[a][b]})" for a, b in pairwise(cycle)]
    return " -> ".join([*steps, cycle[-1]])
