"""Every reader of a topic reads committed records only (CONTRACT.md, Transport).

``exectrack.consumer.kafka.reader`` is the one place an ``AIOKafkaConsumer`` is built; this
module scans every Python file of the code base (the packages, bench/, tests/,
deploy/, migrations/) and fails on any other construction, so a new reader
cannot forget ``isolation_level="read_committed"``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from exectrack.consumer.kafka import ISOLATION_LEVEL, reader

ROOT = Path(__file__).resolve().parents[2]
FACTORY = Path("src/exectrack/consumer/kafka.py")
SKIPPED_DIRS = {"build", "dist", "node_modules", "__pycache__"}


def sources() -> Iterator[tuple[Path, str]]:
    """(path relative to the repository, text) of every Python file we ship or run."""
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        dirs = relative.parts[:-1]
        if any(d.startswith(".") or d in SKIPPED_DIRS or d.endswith(".egg-info") for d in dirs):
            continue  # .venv, .git, .local and build output are not ours
        yield relative, path.read_text(encoding="utf-8")


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def offences(text: str) -> list[str]:
    """What in one file would build a consumer without the factory, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            callee = _callee(node)
            if callee == "AIOKafkaConsumer":
                found.append(f"{node.lineno}: AIOKafkaConsumer(...)")
            if callee in ("AIOKafkaConsumer", "reader") and any(
                keyword.arg == "isolation_level" for keyword in node.keywords
            ):  # SQLAlchemy's isolation_level (the database's) is another matter
                found.append(f"{node.lineno}: isolation_level=")
        elif isinstance(node, ast.ImportFrom | ast.Import):
            for alias in node.names:
                if alias.name.endswith("AIOKafkaConsumer") and alias.asname:
                    found.append(f"{node.lineno}: AIOKafkaConsumer imported as {alias.asname}")
    return found


def reader_calls(text: str) -> int:
    calls = [node for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)]
    return sum(_callee(node) == "reader" for node in calls)


def test_no_consumer_is_built_outside_the_factory() -> None:
    scanned = dict(sources())
    assert FACTORY in scanned
    wrong = {
        str(path): found
        for path, text in scanned.items()
        if path != FACTORY and (found := offences(text))
    }
    assert wrong == {}


def test_the_scan_sees_the_known_readers() -> None:
    """The scan is not vacuous: it finds the readers this code base is known to have."""
    scanned = dict(sources())
    known = [
        "src/exectrack/consumer/service.py",  # consume
        "src/exectrack/consumer/replay/rebuild.py",  # replay
        "tests/support/kafka.py",  # read_all, committed_lag
        "bench/consumer.py",  # the drain ceiling, the naive loop, the group lag
    ]
    assert {path: reader_calls(scanned[Path(path)]) >= 1 for path in known} == dict.fromkeys(
        known, True
    )
    in_factory = [found.split(": ", 1)[1] for found in offences(scanned[FACTORY])]
    assert in_factory == ["AIOKafkaConsumer(...)", "isolation_level="]


@pytest.mark.parametrize(
    "planted",
    [
        "from aiokafka import AIOKafkaConsumer\nc = AIOKafkaConsumer(bootstrap_servers='x')\n",
        "import aiokafka\nc = aiokafka.AIOKafkaConsumer()\n",
        "from aiokafka import AIOKafkaConsumer as Reader\n",
        "c = reader(isolation_level='read_uncommitted')\n",
    ],
)
def test_the_scan_catches_a_planted_reader(planted: str) -> None:
    assert offences(planted) != []


async def test_reader_reads_committed_and_refuses_another_level() -> None:
    consumer = reader(bootstrap_servers="127.0.0.1:1")  # built, never started: no I/O
    try:
        assert consumer._isolation_level == ISOLATION_LEVEL == "read_committed"
    finally:
        await consumer.stop()
    chosen = {"isolation_level": "read_uncommitted"}  # the factory refuses it at run time too
    with pytest.raises(TypeError, match="read_committed"):
        reader(bootstrap_servers="127.0.0.1:1", **chosen)
