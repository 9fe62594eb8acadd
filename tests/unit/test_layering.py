"""Layering of exectrack's modules, read from the source (issue #14, item 3).

- No import circles among exectrack's modules, counting the imports that run when a
  module is imported (not those under ``if TYPE_CHECKING:`` or inside functions,
  which is how a circle is held open).
- The pure retention policy, its file and the fold sit below what uses them: they
  import nothing of the consumer but each other and ``exectrack.consumer.errors``.
- The producer never imports the consumer, and imports none of the consumer extra's
  distributions when it is imported: ``pip install exectrack`` is enough for it
  (tests/integration/test_install.py checks the same on an installed wheel).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from exectrack._extras import CONSUMER_MODULES
from tests.support.imports import (
    PACKAGE,
    describe,
    find_cycle,
    import_graph,
    imports_of,
    module_files,
)

MODULES = module_files()
PURE = {
    f"{PACKAGE}.consumer.retention.policy",
    f"{PACKAGE}.consumer.retention.policy_file",
    f"{PACKAGE}.consumer.ingest.fold",
}
PURE_MAY_IMPORT = PURE | {f"{PACKAGE}.consumer.errors"}


def every_import(name: str) -> set[str]:
    """The exectrack modules ``name`` imports anywhere in its file (functions and
    ``TYPE_CHECKING`` blocks too)."""
    return {found.target for found in imports_of(name, MODULES[name], set(MODULES))}


def packages_above(name: str) -> list[str]:
    """The packages Python imports before module ``name``: ``a.b.c`` -> ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def test_the_graph_covers_both_packages() -> None:
    """The reader finds the modules and their imports (an empty graph has no circles)."""
    graph = import_graph()
    assert len(graph) > 50
    assert {f"{PACKAGE}.consumer.service", f"{PACKAGE}.producer.publisher"} <= graph.keys()
    assert f"{PACKAGE}.consumer.ingest.pipeline" in graph[f"{PACKAGE}.consumer.service"]
    assert f"{PACKAGE}.producer.events" in graph[f"{PACKAGE}.producer.publisher"]
    assert sum(map(len, graph.values())) > 150


def test_no_import_circles() -> None:
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {describe(cycle, graph)}"


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_circle_is_found_and_deferred_imports_do_not_count(tmp_path: Path) -> None:
    """The check can fail: a circle of module-level imports (absolute, relative,
    ``from package import module``) is reported; one closed only under
    ``if TYPE_CHECKING:`` or inside a function is not."""
    deferred = write(
        tmp_path / "deferred",
        {
            "src/exectrack/__init__.py": "",
            "src/exectrack/producer/__init__.py": "",
            "src/exectrack/consumer/__init__.py": "",
            "src/exectrack/consumer/a.py": "from exectrack.consumer.b import B\n",
            "src/exectrack/consumer/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from exectrack.consumer.c import C\n"
                "def f():\n    from exectrack.consumer import a\n"
            ),
            "src/exectrack/consumer/c.py": "from .a import A\n",
        },
    )
    graph = import_graph(deferred)
    assert graph["exectrack.consumer.c"] == {"exectrack.consumer.a": 1}
    assert find_cycle(graph) is None
    every = import_graph(deferred, module_level_only=False)
    assert every["exectrack.consumer.b"].keys() == {"exectrack.consumer.a", "exectrack.consumer.c"}
    assert find_cycle(every) is not None

    circle = write(
        tmp_path / "circle",
        {
            "src/exectrack/__init__.py": "",
            "src/exectrack/producer/__init__.py": "",
            "src/exectrack/consumer/__init__.py": "",
            "src/exectrack/consumer/db/__init__.py": "",
            "src/exectrack/consumer/a.py": "import exectrack.consumer.b\n",
            "src/exectrack/consumer/b.py": (
                "try:\n    from exectrack.consumer.db import c\nexcept ImportError:\n    pass\n"
            ),
            "src/exectrack/consumer/db/c.py": "class C:\n    from ..a import A\n",
        },
    )
    graph = import_graph(circle)
    cycle = find_cycle(graph)
    assert cycle is not None
    assert describe(cycle, graph) in {
        "exectrack.consumer.a (line 1) -> exectrack.consumer.b (line 2) -> "
        "exectrack.consumer.db.c (line 2) -> exectrack.consumer.a",
        "exectrack.consumer.b (line 2) -> exectrack.consumer.db.c (line 2) -> "
        "exectrack.consumer.a (line 1) -> exectrack.consumer.b",
        "exectrack.consumer.db.c (line 2) -> exectrack.consumer.a (line 1) -> "
        "exectrack.consumer.b (line 2) -> exectrack.consumer.db.c",
    }


@pytest.mark.parametrize("name", sorted(PURE))
def test_the_pure_policy_and_the_fold_sit_below_what_uses_them(name: str) -> None:
    assert name in MODULES
    for module in [*packages_above(name), name]:
        consumer = {t for t in every_import(module) if t.startswith(f"{PACKAGE}.consumer")}
        assert consumer <= PURE_MAY_IMPORT, f"{module} imports {consumer - PURE_MAY_IMPORT}"


def test_the_producer_never_imports_the_consumer() -> None:
    producer = [name for name in MODULES if not name.startswith(f"{PACKAGE}.consumer")]
    assert f"{PACKAGE}.producer.cli" in producer
    for name in producer:
        if name == f"{PACKAGE}._extras":
            continue  # exectrack-consumer's entry point: the consumer's CLI, or why not
        consumer = {t for t in every_import(name) if t.startswith(f"{PACKAGE}.consumer")}
        assert not consumer, f"{name} imports {consumer}"


def test_importing_the_producer_needs_no_consumer_extra() -> None:
    """At import time the producer's modules import none of the consumer extra's
    distributions (``rich``, the ``simulate`` extra, is imported where the progress
    bar is drawn)."""
    for name, path in MODULES.items():
        if name.startswith(f"{PACKAGE}.consumer"):
            continue
        loaded = {
            found.target.partition(".")[0]
            for found in imports_of(name, path, set(MODULES), external=True)
            if found.module_level
        }
        extra = loaded & set(CONSUMER_MODULES)
        assert not extra, f"{name} imports {extra} (the consumer extra) when it is imported"
