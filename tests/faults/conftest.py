"""Fixtures of the fault scenarios (docs/reliability.md).

``EXECTRACK_FAULTS_SCALE=quick`` (the default, part of ``make test``) runs each
scenario small; ``long`` runs the full counts (``make faults``). Every scenario
records its figures; at the end of the session they are written to
``tests/faults/results/<scale>-<UTC time>.json`` (git-ignored), the source of
the tables in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import Topics
from tests.stack import Services
from tests.support.faults import Figures, Spawn, spawner, stack_sync

SCALE = os.environ.get("EXECTRACK_FAULTS_SCALE", "quick")
if SCALE not in ("quick", "long"):
    raise ValueError(f"EXECTRACK_FAULTS_SCALE={SCALE!r}: use quick or long")
RESULTS = Path(os.environ.get("EXECTRACK_FAULTS_RESULTS", Path(__file__).parent / "results"))
T = TypeVar("T")


def pick(quick: T, long: T) -> T:
    """The quick or the long figure, by EXECTRACK_FAULTS_SCALE."""
    return long if SCALE == "long" else quick


_RECORDED: list[Figures] = []


@pytest.fixture(scope="session", autouse=True)
def results_file() -> Iterator[None]:
    started = datetime.now(UTC)
    yield
    if not _RECORDED:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{SCALE}-{started:%Y%m%dT%H%M%SZ}.json"
    document = {
        "scale": SCALE,
        "started": started.isoformat(timespec="seconds"),
        "scenarios": [asdict(figures) for figures in _RECORDED],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """The scenario's figures; kept for the results file only if the test passed."""
    found = Figures(scenario=request.node.name, notes={"scale": SCALE})
    started = time.perf_counter()
    yield found
    found.elapsed_s = round(time.perf_counter() - started, 1)
    found.recover_s = [round(s, 2) for s in found.recover_s]
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        _RECORDED.append(found)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture
def spawn(topics: Topics, database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start `exectrack-consumer consume` processes; every one is killed at teardown."""
    yield from spawner(topics, database_url, tmp_path)


@pytest.fixture
def local_stack(stack: Services) -> Iterator[Services]:
    """Scenarios that kill or stop a service of deploy/local; it is up again afterwards."""
    if stack.backend != "local":
        pytest.skip("hurts services through deploy/local/stack.sh; testcontainers backend in use")
    try:
        yield stack
    finally:
        stack_sync("up")
